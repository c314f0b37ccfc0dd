# Paths derived from the config, shared by the rules. Keep this file small.

# The checkpoint every rule uses: the user's local checkpoint, or the built-in default model.
MODEL_DIR = config["model"]["checkpoint"] or f"{config['results']}/models/default"
