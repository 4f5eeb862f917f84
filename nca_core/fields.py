"""Checking JSON data (model file metadata, settings) against a dataclass's fields."""
from __future__ import annotations

import dataclasses
import numbers
import reprlib
import sys
from typing import Any, Dict, List, Type, Union, get_args, get_origin, get_type_hints

from .errors import ModelFileError, NCAError


def _unknown_fields(cls: type, data: Dict[str, Any]) -> List[str]:
    """Keys of ``data`` that are not fields of the dataclass ``cls``."""
    return sorted(set(data) - {f.name for f in dataclasses.fields(cls)})


def checked_fields(cls: type, data: Any, section: str, error: Type[NCAError] = ModelFileError) -> Dict[str, Any]:
    """``data`` as keyword arguments for the dataclass ``cls``: a JSON object with no
    unknown keys, every required field and every value of its field's type.

    Raises ``error`` (ModelFileError for model files) naming ``section`` and the offending field.
    """
    json_object(data, section, error)
    unknown = _unknown_fields(cls, data)
    if unknown:
        raise error(f"invalid {section}: unknown keys {unknown}")
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        _check_field(field, hints[field.name], data, section, error)
    return data


def json_object(data: Any, section: str, error: Type[NCAError] = ModelFileError) -> Dict[str, Any]:
    """``data`` if it is a JSON object, else ``error`` naming ``section``."""
    if not isinstance(data, dict):
        raise error(f"invalid {section}: expected a JSON object, found {reprlib.repr(data)}")
    return data


def _check_field(field: dataclasses.Field, hint: Any, data: Dict[str, Any], section: str,
                 error: Type[NCAError]) -> None:
    if field.name not in data:
        if _is_required(field):
            raise error(f"invalid {section}: {field.name} is missing")
        return
    value = data[field.name]
    if not _matches(value, hint):
        raise error(f"invalid {section}: {field.name} must be {field.type}, found {reprlib.repr(value)}")


def _is_required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _matches(value: Any, hint: Any) -> bool:
    """Whether the JSON ``value`` has the type ``hint`` (int, float, bool, str, List, Dict, Optional)."""
    origin = get_origin(hint)
    if origin is Union:
        return any(_matches(value, option) for option in get_args(hint))
    if origin is list:
        return isinstance(value, list) and all(_matches(item, get_args(hint)[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return is_real_number(value)
    if hint is int:
        return _is_whole_number(value)
    if hint is type(None):
        return value is None
    return isinstance(value, hint)


def _is_whole_number(value: Any) -> bool:
    """An int (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real_number(value: Any) -> bool:
    """A finite int or float (numpy's too), not a bool; a huge int fails rather than overflows."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and abs(value) <= sys.float_info.max
