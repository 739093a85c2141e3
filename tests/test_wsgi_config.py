"""``Config``'s declared fields, which type checkers read, stay the options
``OPTIONS`` defines and the types their parsers return."""

from __future__ import annotations

import typing

import pytest

from tgreen.wsgi.config import OPTIONS, Config, ConfigError


def test_config_declares_one_field_per_option_in_the_order_of_options():
    assert list(Config.__annotations__) == [o.name for o in OPTIONS]


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_each_declared_field_has_the_type_its_parser_returns(option):
    declared = typing.get_type_hints(Config)[option.name]
    returned = typing.get_type_hints(option.parse)["return"]
    assert declared == returned


def test_every_declared_field_holds_its_parsed_default():
    cfg = Config()
    for o in OPTIONS:
        assert getattr(cfg, o.name) == o.parse(o.name, o.default)


def test_an_undeclared_name_is_still_refused():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.no_such_option = 1  # type: ignore[attr-defined]
    with pytest.raises(ConfigError):
        Config(cores=0)
