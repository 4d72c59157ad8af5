"""Parts are composed, not inherited: no product class stands on more than one level of reqrep's
own classes. Exceptions (one hierarchy, drawn in ``common/errors.py``), Protocols and Enums are
the exceptions to the rule; a subclass of a library's class (pika's connection) counts only
reqrep's classes in its ancestry.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
from types import ModuleType

import reqrep


def _modules() -> list[ModuleType]:
    # Each mapped package is walked on its own: an editable install's reqrep.__path__ holds
    # the reqrep/ folder only. __main__ modules run the command line when imported.
    names: set[str] = set()
    for package in (reqrep, reqrep.common, reqrep.requestor, reqrep.worker):
        prefix = f"{package.__name__}."
        names |= {m.name for m in pkgutil.walk_packages(package.__path__, prefix)}
    return [importlib.import_module(n) for n in sorted(names) if not n.endswith("__main__")]


def _exempt(cls: type) -> bool:
    return (
        issubclass(cls, BaseException)
        or issubclass(cls, enum.Enum)
        or bool(getattr(cls, "_is_protocol", False))
    )


def project_ancestors(cls: type) -> list[type]:
    """The reqrep classes ``cls`` inherits from, Protocols left out."""
    return [
        base
        for base in cls.__mro__[1:]
        if base.__module__.startswith("reqrep.") and not getattr(base, "_is_protocol", False)
    ]


def test_every_module_is_read() -> None:
    names = {m.__name__ for m in _modules()}
    expected = {"reqrep.worker.server", "reqrep.requestor.client", "reqrep.common._link"}
    assert expected | {"reqrep.common._transport._pika", "reqrep.testing._local"} <= names


def test_no_class_stands_on_two_levels_of_project_classes() -> None:
    deep = [
        f"{cls.__module__}.{cls.__qualname__} <- {[b.__qualname__ for b in ancestors]}"
        for module in _modules()
        for cls in vars(module).values()
        if inspect.isclass(cls) and cls.__module__ == module.__name__ and not _exempt(cls)
        if len(ancestors := project_ancestors(cls)) > 1
    ]
    assert deep == []


def test_the_check_sees_a_second_level() -> None:
    base = type("Base", (), {"__module__": "reqrep.x"})
    middle = type("Middle", (base,), {"__module__": "reqrep.x"})
    leaf = type("Leaf", (middle,), {"__module__": "reqrep.x"})
    assert project_ancestors(middle) == [base]
    assert project_ancestors(leaf) == [middle, base]
