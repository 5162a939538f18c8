"""Build jaxnet's API reference (HTML) from its docstrings with pdoc; any warning is an error.

    python docs/build_api.py                 # writes build/api/index.html (open it in a browser)
    python docs/build_api.py --out DIR       # elsewhere

The reference covers the package and every public module under it (``jaxnet.__main__`` aside,
which runs the command line), documenting the ``jaxnet`` of this tree. The build fails, naming
each problem, when pdoc warns (a docstring it cannot parse, an annotation it cannot resolve, a
module that does not import), when jaxnet's own modules warn on import, or when a public
function, class, method or property has no docstring of its own or inherited.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pathlib
import pkgutil
import sys
import warnings

import pdoc
import pdoc.doc
import pdoc.render

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCFORMAT = "google"  # Args:/Returns: sections, with reStructuredText's ``code`` inline
DEPENDENCIES = ("jax", "numpy", "optax", "chex", "sklearn", "matplotlib", "tqdm")


def public_modules() -> list[str]:
    """``jaxnet`` and every module under it whose dotted name has no part starting with ``_``."""
    import jaxnet

    found = (info.name for info in pkgutil.walk_packages(jaxnet.__path__, "jaxnet."))
    return ["jaxnet", *(name for name in found if not any(part.startswith("_") for part in name.split(".")))]


def _is_property(ns: pdoc.doc.Namespace, name: str) -> bool:
    """Whether ``name`` is a property of the class ``ns`` (pdoc lists properties as variables)."""
    return isinstance(ns, pdoc.doc.Class) and isinstance(inspect.getattr_static(ns.obj, name, None), property)


def undocumented(module: pdoc.doc.Module) -> list[str]:
    """Public functions, classes, methods and properties of ``module`` without a docstring."""
    missing = []

    def visit(ns: pdoc.doc.Namespace) -> None:
        for member in ns.members.values():
            if member.name.startswith("_") or member.taken_from[0] != module.modulename:
                continue  # private (dunders too), or documented where it is defined
            if isinstance(member, pdoc.doc.Class):
                if not member.docstring:
                    missing.append(member.fullname)
                visit(member)
            elif (isinstance(member, pdoc.doc.Function) or _is_property(ns, member.name)) and not member.docstring:
                missing.append(member.fullname)

    visit(module)
    return missing


def build(out: pathlib.Path) -> list[str]:
    """Write the reference into ``out``; return the problems found (empty when clean)."""
    for dependency in DEPENDENCIES:
        importlib.import_module(dependency)  # their import-time warnings are theirs, not the docs'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = public_modules()  # jaxnet's own import-time warnings count
        for name in names:
            importlib.import_module(name)
        import jaxnet

        pdoc.render.configure(docformat=DOCFORMAT, footer_text=f"jaxnet {jaxnet.__version__}")
        added = {f"jaxnet.{name}" for name in jaxnet.__all__}  # pdoc adds the modules jaxnet.__all__ names
        pdoc.pdoc(*(name for name in names if name not in added), output_directory=out)
        modules = [pdoc.doc.Module.from_name(name) for name in names]
    problems = [f"pdoc: {w.category.__name__}: {w.message}" for w in caught]
    for module in modules:
        problems += [f"{name}: no docstring" for name in undocumented(module)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "build" / "api", help="output folder")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # document this tree's jaxnet, whichever one is installed
    problems = build(args.out)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"docs/build_api.py: {len(problems)} problem(s); the reference is not clean", file=sys.stderr)
        return 1
    print(f"API reference written to {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
