"""The user-error hierarchy's one-line format, and registry lookups."""

from __future__ import annotations

import pytest

from alignlab.core.errors import (
    AlignlabError,
    ConfigError,
    DataError,
    DependencyError,
    ModelError,
    ResumeError,
)
from alignlab.core.registry import Registry


def test_error_one_line_is_what_where_and_fix():
    e = DataError("caption is empty", where="data/train.jsonl:17", fix="remove the line or give a caption")
    assert str(e) == "caption is empty (data/train.jsonl:17); remove the line or give a caption"
    assert e.one_line() == str(e)
    assert (e.what, e.where, e.fix) == (
        "caption is empty",
        "data/train.jsonl:17",
        "remove the line or give a caption",
    )


def test_error_without_where_or_fix_omits_their_parts():
    assert str(ConfigError("bad")) == "bad"
    assert str(ConfigError("bad", where="x.yaml")) == "bad (x.yaml)"
    assert str(ConfigError("bad", fix="do y")) == "bad; do y"


def test_error_message_with_newlines_stays_on_one_line():
    e = ModelError("first\nsecond", where="a\nb", fix="c\nd")
    assert "\n" not in str(e)
    assert str(e) == "first second (a b); c d"


@pytest.mark.parametrize("cls", [DataError, ConfigError, ModelError, DependencyError, ResumeError])
def test_every_user_error_is_an_alignlab_error(cls):
    assert issubclass(cls, AlignlabError)
    with pytest.raises(AlignlabError):
        raise cls("x")


def test_registry_returns_registered_objects_and_lists_names():
    reg = Registry("loss")

    @reg.register("infonce")
    def infonce():
        return 1

    reg.register("vse", max)
    assert reg.get("infonce") is infonce and reg.get("vse") is max
    assert reg.names() == ["infonce", "vse"] and list(reg) == ["infonce", "vse"]
    assert "vse" in reg and "kd" not in reg


def test_registry_unknown_name_suggests_the_closest_and_lists_all():
    reg = Registry("loss")
    for name in ("infonce", "vse_max_violation", "kd"):
        reg.register(name, name)
    with pytest.raises(ConfigError) as e:
        reg.get("infonse")
    assert e.value.what == "unknown loss 'infonse'"
    assert "did you mean 'infonce'?" in e.value.fix
    assert "infonce, kd, vse_max_violation" in e.value.fix
    with pytest.raises(ConfigError) as e:
        reg.get("zzzzzz")
    assert "did you mean" not in e.value.fix


def test_registry_refuses_a_name_twice():
    reg = Registry("model")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="twice"):
        reg.register("a", 2)
