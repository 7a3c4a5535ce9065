"""protocol/errors.py: error codes, close codes and ProtocolError."""

import pytest

from protocol import errors
from protocol.errors import ERROR_CODES, ErrorInfo, ProtocolError


def test_every_code_constant_is_described():
    constants = {value for name, value in vars(errors).items()
                 if name.isupper() and isinstance(value, str)}
    assert constants == ERROR_CODES
    assert all(errors.ERROR_DESCRIPTIONS[code] for code in ERROR_CODES)


def test_close_codes_are_the_rfc_values():
    assert (errors.CLOSE_POLICY_VIOLATION, errors.CLOSE_MESSAGE_TOO_BIG,
            errors.CLOSE_INTERNAL_ERROR, errors.CLOSE_TRY_AGAIN_LATER) == (1008, 1009, 1011, 1013)


def test_protocol_error_to_info():
    error = ProtocolError("invalid_field", "top_p must be > 0", field="top_p",
                          event_type="response.create", response_id="r")
    assert str(error) == "top_p must be > 0" and error.close_code is None
    assert error.to_info() == ErrorInfo("invalid_field", "top_p must be > 0",
                                        "response.create", "top_p", None, "r")
    assert "top_p" in repr(error)


def test_unknown_code_is_a_bug():
    with pytest.raises(ValueError):
        ProtocolError("made_up", "x")


def test_error_info_wire_leaves_unset_fields_out():
    assert ErrorInfo("overloaded", "busy").to_wire() == {"code": "overloaded", "message": "busy"}
    wire = ErrorInfo("unknown_item", "no item", item_id="i").to_wire()
    assert wire == {"code": "unknown_item", "message": "no item", "item_id": "i"}
