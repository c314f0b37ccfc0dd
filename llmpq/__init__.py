"""llmpq: plan and run offline batch LLM inference on heterogeneous GPU clusters.

Typical use::

    from llmpq.models.spec import model_spec
    from llmpq.cluster import load_cluster
    from llmpq.workload import load_workload

    spec = model_spec("opt-30b")                      # or a local HF checkpoint directory
    cluster = load_cluster("config/clusters/paper_03.yaml")
    workload = load_workload("config/workloads/default.yaml")
"""

__version__ = "0.1.0"
