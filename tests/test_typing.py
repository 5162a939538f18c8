"""The public API is annotated, and says so (PEP 561): every callable of ``jaxnet.__all__`` and every
public function of ``jaxnet.train`` and ``jaxnet.sweep`` annotates each parameter and its return. That
the annotations are right is mypy's job (``mypy``, configured in pyproject.toml, run by .ci/run)."""

import inspect
import pathlib

import jaxnet
from jaxnet import sweep, train


def unannotated(obj):
    """What ``obj`` leaves unannotated: ``"name(param)"`` for a parameter (``self``/``cls`` aside) and
    ``"name -> return"`` for the return. For a class: its own ``__init__`` (a dataclass's generated one
    is annotated by its fields) and its public methods and properties."""
    if inspect.isclass(obj):
        found = []
        for name, member in vars(obj).items():
            member = member.fget if isinstance(member, property) else member
            member = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            if (name == "__init__" or not name.startswith("_")) and inspect.isfunction(member):
                found += unannotated(member)
        return found
    name = getattr(obj, "__qualname__", repr(obj))
    signature = inspect.signature(obj)
    found = [
        f"{name}({p.name})"
        for p in signature.parameters.values()
        if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty
    ]
    return found + ([f"{name} -> return"] if signature.return_annotation is inspect.Signature.empty else [])


def public_api():
    """``{name: object}``: the callables of ``jaxnet.__all__`` (its dicts, modules and version aside) and
    the public functions defined in ``jaxnet.train`` and ``jaxnet.sweep`` (jitted ones included)."""
    api = {name: getattr(jaxnet, name) for name in jaxnet.__all__ if callable(getattr(jaxnet, name))}
    for module in (train, sweep):
        api |= {
            f"{module.__name__}.{name}": obj
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and callable(obj)
            and not inspect.isclass(obj)
            and getattr(obj, "__module__", None) == module.__name__
        }
    return api


def test_public_api_is_fully_annotated():
    api = public_api()
    assert {"mlp", "check_grads", "Dense", "Network", "GradReport"} <= set(api)
    assert {"jaxnet.train.fit", "jaxnet.train.metric_arrays", "jaxnet.sweep.run", "jaxnet.sweep.grid"} <= set(api)
    assert [missing for obj in api.values() for missing in unannotated(obj)] == []


def _half_annotated(x, scale: float = 2.0):
    return x * scale


class _Box:
    def __init__(self, size) -> None:
        self.size = size

    @property
    def area(self):
        return self.size**2

    def grow(self, by: float) -> None:
        self.size += by


def test_unannotated_names_what_is_missing():
    assert unannotated(_half_annotated) == ["_half_annotated(x)", "_half_annotated -> return"]
    assert unannotated(_Box) == ["_Box.__init__(size)", "_Box.area -> return"]


def test_package_ships_the_py_typed_marker():
    assert (pathlib.Path(jaxnet.__file__).parent / "py.typed").is_file()
