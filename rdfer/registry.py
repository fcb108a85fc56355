"""Name -> factory registries for backbones and whole wrapped models.

The feel follows ``timm.create_model`` / ``torchvision.models.get_model``::

    @rdfer.register_backbone("my_net")
    def my_net(pretrained=False, **kwargs) -> nn.Module: ...

    rdfer.list_backbones("r*")            # fnmatch wildcards, sorted
    rdfer.create_backbone("r3d_18")

Families: a registry can also route a whole name prefix to one factory (``timm/<name>`` builds
any timm image model as a frame encoder). Family members are listed as ``"timm/*"`` in the plain
listing and expanded when a pattern names the prefix (``list_backbones("timm/resnet*")``).

Lazy entries: the built-in backbones are known by name before their modules are imported
(:meth:`Registry.register_lazy`); a module is imported when one of its names is built, so
listing names or building ``tiny_cnn`` never imports torchvision's model zoo, timm or
pytorchvideo.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Dict, Iterable, List, Optional, TypeVar

import torch.nn as nn

__all__ = [
    "Registry",
    "UnknownNameError",
    "check_backbone_name",
    "check_model_name",
    "register_backbone",
    "create_backbone",
    "list_backbones",
    "is_backbone",
    "register_model",
    "create_model",
    "list_models",
]

F = TypeVar("F", bound=Callable[..., nn.Module])


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered. A KeyError (a failed lookup) and a ValueError (a bad
    option value), so the command line reports it as a user error; ``str()`` is the message."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry:
    """A mapping from names to factories returning ``nn.Module`` objects."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: Dict[str, Callable[..., nn.Module]] = {}
        # prefix -> (factory(member_name, **kw), lister(pattern) -> member names)
        self._families: Dict[str, tuple] = {}
        # name (or family prefix ending in "/") -> the module whose import registers it
        self._lazy: Dict[str, str] = {}

    def register_lazy(self, names: Iterable[str], module: str) -> None:
        """Known names whose factories ``module`` registers when imported (on first use).
        A name ending in ``/`` is a family prefix."""
        for name in names:
            if name not in self._factories and name not in self._families:
                self._lazy[name] = module

    def _load(self, name: str) -> None:
        """Import the module that registers ``name`` (an exact lazy name or a lazy family's member)."""
        module = self._lazy.get(name) or next((m for p, m in self._lazy.items()
                                               if p.endswith("/") and name.startswith(p)), None)
        if module is not None:
            import importlib

            importlib.import_module(module)
            for key in [k for k, m in self._lazy.items() if m == module]:
                self._lazy.pop(key)  # the module registered what it has; nothing left to load

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: register ``fn`` under ``name``. Re-registering a name is an error."""

        def decorator(fn: F) -> F:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = fn
            self._lazy.pop(name, None)
            return fn

        return decorator

    def register_family(
        self,
        prefix: str,
        factory: Callable[..., nn.Module],
        lister: Callable[[str], Iterable[str]],
    ) -> None:
        """Route every name ``prefix + member`` to ``factory(member, **kwargs)``."""
        self._families[prefix] = (factory, lister)
        self._lazy.pop(prefix, None)

    def __contains__(self, name: str) -> bool:
        if name in self._factories or (name in self._lazy and not name.endswith("/")):
            return True
        prefixes = list(self._families) + [p for p in self._lazy if p.endswith("/")]
        return any(name.startswith(p) and len(name) > len(p) for p in prefixes)

    def check(self, name: str) -> None:
        """Raise :class:`UnknownNameError` (close matches, or the names when they are few) unless
        ``name`` can be created. A family member (``timm/<name>``) is looked up in its family's list."""
        if isinstance(name, str) and name in self._factories:
            return
        if isinstance(name, str) and name in self._lazy and not name.endswith("/"):
            return  # a built-in name, known without importing its module
        if isinstance(name, str):
            self._load(name)  # a lazy family's member: its lister needs the module
        for prefix, (_, lister) in self._families.items():
            if isinstance(name, str) and name.startswith(prefix) and len(name) > len(prefix):
                member = name[len(prefix):]
                if member in lister(member):  # a name without wildcards lists itself when it exists
                    return
                close = [prefix + m for m in difflib.get_close_matches(member, lister(""), n=5)]
                hint = f" Did you mean: {', '.join(close)}?" if close else ""
                raise UnknownNameError(f"Unknown {self.kind} {name!r}: {prefix.rstrip('/')} has no model "
                                       f"{member!r}.{hint} See rdfer.list_{self.kind}s({prefix + '*'!r}).")
        names = self.list()
        close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        known = (f"Known: {', '.join(names)}." if len(names) <= 20 else
                 f"See rdfer.list_{self.kind}s() for all {len(names)} names.")
        raise UnknownNameError(f"Unknown {self.kind} {name!r}.{hint} {known}")

    def create(self, name: str, **kwargs) -> nn.Module:
        self._load(name)
        if name in self._factories:
            return self._factories[name](**kwargs)
        for prefix, (factory, _) in self._families.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                return factory(name[len(prefix):], **kwargs)
        self.check(name)
        raise AssertionError("unreachable")  # pragma: no cover

    def list(self, pattern: Optional[str] = None) -> List[str]:
        if pattern is not None:
            self._load(pattern)  # "timm/res*" lists timm's models: its module is needed
        names = set(self._factories) | {n for n in self._lazy if not n.endswith("/")}
        names.update(p + "*" for p in self._lazy if p.endswith("/"))
        for prefix, (_, lister) in self._families.items():
            if pattern is not None and pattern.startswith(prefix):
                names.update(prefix + m for m in lister(pattern[len(prefix):]))
            else:
                names.add(prefix + "*")
        if pattern is not None:
            names = {n for n in names if fnmatch.fnmatchcase(n, pattern)}
        return sorted(names)


BACKBONES = Registry("backbone")
MODELS = Registry("model")


def register_backbone(name: str) -> Callable[[F], F]:
    """Register a backbone factory under ``name`` (decorator).

    The factory takes keyword arguments (at least ``pretrained``) and returns an ``nn.Module``
    following the backbone contract (see :mod:`rdfer.backbones.contract`).
    """
    return BACKBONES.register(name)


def _ensure_builtin_backbones() -> None:
    # The built-in names are declared (lazily) by rdfer.backbones; each family's module is
    # imported when one of its names is built. Imported here so that `import rdfer.registry`
    # alone stays cheap and free of cycles.
    import rdfer.backbones  # noqa: F401


def create_backbone(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone, e.g. ``create_backbone("r3d_18", pretrained=False)``."""
    _ensure_builtin_backbones()
    return BACKBONES.create(name, **kwargs)


def list_backbones(pattern: Optional[str] = None) -> List[str]:
    """Sorted backbone names matching the fnmatch ``pattern`` (all when None).

    timm image models appear as the family entry ``"timm/*"``; a pattern starting with
    ``"timm/"`` lists the matching timm models, e.g. ``list_backbones("timm/resnet1*")``.
    """
    _ensure_builtin_backbones()
    return BACKBONES.list(pattern)


def is_backbone(name: str) -> bool:
    """True when ``name`` can be built by :func:`create_backbone`."""
    _ensure_builtin_backbones()
    return name in BACKBONES


def _named(option: Optional[str], err: UnknownNameError) -> UnknownNameError:
    return UnknownNameError(f"{option}: {err}") if option else err


def check_backbone_name(name: str, option: Optional[str] = None) -> None:
    """Raise :class:`UnknownNameError` unless :func:`create_backbone` knows ``name``; the message
    starts with ``option`` (e.g. ``--backbone``) when given."""
    _ensure_builtin_backbones()
    try:
        BACKBONES.check(name)
    except UnknownNameError as err:
        raise _named(option, err) from None


def check_model_name(name: str, option: Optional[str] = None) -> None:
    """Raise :class:`UnknownNameError` unless :func:`create_model` knows ``name``."""
    _ensure_builtin_models()
    try:
        MODELS.check(name)
    except UnknownNameError as err:
        raise _named(option, err) from None


def register_model(name: str) -> Callable[[F], F]:
    """Register a whole-model preset (a factory returning a wrapped RDFER model)."""
    return MODELS.register(name)


def _ensure_builtin_models() -> None:
    import rdfer.model.presets  # noqa: F401


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered preset, e.g. ``create_model("rdfer_small", num_classes=7)``.

    Keyword arguments override the preset's configuration.
    """
    _ensure_builtin_models()
    return MODELS.create(name, **kwargs)


def list_models(pattern: Optional[str] = None) -> List[str]:
    """Sorted preset names matching the fnmatch ``pattern`` (all when None)."""
    _ensure_builtin_models()
    return MODELS.list(pattern)
