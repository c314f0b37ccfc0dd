from llmpq.errors import UserError


def test_message_names_field_value_and_fix():
    err = UserError("workload.batch_size", -3, "use a positive integer", "is not positive")
    assert str(err) == "workload.batch_size = -3 is not positive; use a positive integer"
    assert isinstance(err, ValueError)
    assert (err.field, err.value, err.fix) == ("workload.batch_size", -3, "use a positive integer")
