"""Query parameters are checked before a handler sees them: an integer past int64 is a typed
422 (42206), not a 500 from whatever packs it later (msgpack refuses it)."""

import pytest

from webui.errors import ApiError
from webui.spec import _coerce

INT = {"type": "integer", "minimum": 0}


def test_an_integer_in_range_is_taken():
    assert _coerce("77", INT) == 77
    assert _coerce(str(2**63 - 1), INT) == 2**63 - 1


@pytest.mark.parametrize("raw", ["77864964827560001142784", str(2**63), str(-2**63 - 1)])
def test_an_integer_past_int64_is_a_typed_error(raw):
    with pytest.raises(ApiError) as e:
        _coerce(raw, INT)
    assert e.value.error_code == 42206


def test_a_value_outside_an_enum_is_told_every_choice():
    """Not the validator's '"7" is not one of "-1", "0" or 2 other candidates'."""
    import jsonschema_rs

    from webui.spec import _first_error
    validator = jsonschema_rs.validator_for({"type": "string", "enum": ["-1", "0", "1", "all"]})
    assert _first_error(validator, "7") == '(body): "7" is not one of "-1", "0", "1", "all"'
    assert _first_error(validator, "all") is None


def test_a_value_matching_no_alternative_is_told_what_each_wants():
    """A record's `"partition": "x"` (or a header value that is no base64) was answered
    '"x" is not valid under any of the schemas listed in the \\'anyOf\\' keyword': the user's
    field named, what it wants not."""
    import jsonschema_rs

    from webui.schemas import PARTITION
    from webui.spec import _first_error
    validator = jsonschema_rs.validator_for({"type": "object", "properties": {
        "partition": {"anyOf": [PARTITION, {"type": "null"}]}}})
    problem = _first_error(validator, {"partition": "x"})
    assert problem == 'partition: "x" matches no alternative: it is not of type "integer"; it is not of type "null"', problem
    assert _first_error(validator, {"partition": 1}) is None


@pytest.mark.parametrize("body, where", [
    ({"records": [{"value": "not base64!"}]}, "records/0/value: "),
    ({"records": [{"key": "x", "value": "eA=="}]}, "records/0/key: "),
    ({"records": [{"value": "eA==", "headers": [{"name": "h", "value": "%%"}]}]}, "records/0/headers/0/value: "),
])
def test_a_binary_field_that_is_no_base64_is_told_so(body, where):
    """The binary format's 422 for a value that is no base64 showed the schema's regular
    expression ('"not base64!" does not match "^(?:[A-Za-z0-9+/]{4})*(?:..."') instead of saying
    what the field wants."""
    import jsonschema_rs

    from webui.schemas import produce_schema
    from webui.spec import _first_error
    problem = _first_error(jsonschema_rs.Draft202012Validator(produce_schema(True)), body)
    assert problem.startswith(where) and "is not base64" in problem and "[A-Za-z0-9+/]" not in problem, problem
