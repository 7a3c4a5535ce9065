import dataclasses

import pytest

from protocol.config import DEFAULT_LIMITS, ProtocolLimits


def test_defaults_are_valid_and_frozen():
    assert DEFAULT_LIMITS == ProtocolLimits()
    assert DEFAULT_LIMITS.max_id_chars == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_LIMITS.max_messages = 1


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "8", None])
def test_limits_must_be_positive_integers(bad):
    with pytest.raises(ValueError, match="max_messages"):
        ProtocolLimits(max_messages=bad)
