"""The shape of the seqloss API: module boundaries, keyword-only flags, one name per switch, one return order.

* No module of ``seqloss/`` or ``recipes/`` uses a private (``_name``) function, class or variable of
  another module, and no module outside a package imports that package's private modules
  (``seqloss._ops``, ``seqloss._lattice``, ...); inside its package a private module is fair game.
  Checked on the source with ``ast``; the checker itself is checked on snippets that break each rule.
* Every boolean parameter of a public seqloss function or class is keyword-only, except the
  positional booleans of the drop-in losses, which the test derives from the peer they copy.
* ``one_symbol_per_frame`` is the one name of the lattice switch; the old ``emit_advances_time``
  still works for one release, with a DeprecationWarning that names the new keyword.
* Every Viterbi function returns (path, score).
"""
import ast
import importlib
import inspect
import os
import pkgutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import seqloss
from seqloss import _backend, _ops
from seqloss._lattice import transducer as transducer_lattice
from seqloss._lattice import viterbi as viterbi_lattice
from seqloss.scores import ctc_emissions, ctc_extended_labels

ROOT = Path(seqloss.__file__).resolve().parents[1]
FIRST_PARTY = ("seqloss", "recipes")

# (importing module, private name it may use, why). Empty: no module needs another's private name.
ALLOWED_PRIVATE_USES: set[tuple[str, str]] = set()


# -------------------------------------------------------------------------- private names across modules
def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_path(module: str) -> Path | None:
    """The file or package directory of a first-party module, None if there is none."""
    base = ROOT.joinpath(*module.split("."))
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    if (base / "__init__.py").exists():
        return base
    return None


def _may_import_module(importer: str, module: str) -> bool:
    """A module whose dotted path has a private part is private to the package that holds that part."""
    parts = module.split(".")
    for depth, part in enumerate(parts):
        if _is_private(part):
            owner = ".".join(parts[:depth])
            if not (importer == owner or importer.startswith(owner + ".")):
                return False
    return True


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = importer.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def private_uses(source: str, importer: str, is_package: bool = False) -> list[str]:
    """Every use in `source` (the code of module `importer`) of another first-party module's private name
    or of a first-party private module from outside its package, as 'line: description'."""
    found = []
    modules = {}  # local name -> first-party module it is bound to

    def flag(node, what, module, name):
        if (importer, f"{module}.{name}") not in ALLOWED_PRIVATE_USES:
            found.append(f"{node.lineno}: {what}")

    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in FIRST_PARTY:
                    continue
                if not _may_import_module(importer, alias.name):
                    flag(node, f"import {alias.name}", alias.name, "")
                if alias.asname:
                    modules[alias.asname] = alias.name
                else:
                    modules[alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(importer, is_package, node)
            if module.split(".")[0] not in FIRST_PARTY:
                continue
            if not _may_import_module(importer, module):
                flag(node, f"from {module} import ...", module, "")
            for alias in node.names:
                target = f"{module}.{alias.name}"
                if _module_path(target) is not None:  # a submodule
                    if not _may_import_module(importer, target):
                        flag(node, f"from {module} import {alias.name} (private module)", module, alias.name)
                    modules[alias.asname or alias.name] = target
                elif _is_private(alias.name) and module != importer:
                    flag(node, f"from {module} import {alias.name}", module, alias.name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in modules:
            continue
        # walk module.sub.sub.name: each step is a submodule or, once, a name inside the last module
        module = modules[value.id]
        for attr in reversed(chain):
            target = f"{module}.{attr}"
            if _module_path(target) is not None:
                if not _may_import_module(importer, target):
                    flag(node, f"{target} (private module)", module, attr)
                    break
                module = target
                continue
            if _is_private(attr) and module != importer:
                flag(node, f"{target}", module, attr)
            break
    return sorted(set(found), key=lambda line: int(line.split(":")[0]))


def _first_party_sources():
    for package in FIRST_PARTY:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            yield path, ".".join(parts[:-1] if is_package else parts), is_package


def test_no_module_uses_another_modules_private_names():
    sources = list(_first_party_sources())
    assert len(sources) > 20  # both trees were found
    problems = [f"{path.relative_to(ROOT)}:{use}" for path, module, is_package in sources
                for use in private_uses(path.read_text(), module, is_package)]
    assert not problems, "private names used across modules:\n" + "\n".join(problems)


@pytest.mark.parametrize("importer, source, expected", [
    ("seqloss.align", "from .ctc import _prepare", ["1: from seqloss.ctc import _prepare"]),
    ("seqloss.align", "from . import ctc as _ctc\n_ctc._prepare(1)", ["2: seqloss.ctc._prepare"]),
    ("seqloss.align", "import seqloss.ctc\nseqloss.ctc._prepare(1)", ["2: seqloss.ctc._prepare"]),
    ("seqloss._lattice.viterbi", "from .ctc import _shift", ["1: from seqloss._lattice.ctc import _shift"]),
    ("recipes.models.objectives", "import seqloss\nseqloss._ops.available('cpu')",
     ["2: seqloss._ops (private module)"]),
    ("recipes.models.objectives", "from seqloss import _ops", ["1: from seqloss import _ops (private module)"]),
    ("recipes.models.objectives", "from seqloss._lattice.ctc import ctc_alpha",
     ["1: from seqloss._lattice.ctc import ..."]),
    # allowed: a package's own private modules, public names, a module's own privates, third-party privates
    ("seqloss.ctc", "from . import _backend, _checks\n_checks.check_batch('x', 1)", []),
    ("seqloss._lattice.viterbi", "from .._deprecation import renamed_keyword", []),
    ("seqloss.align", "from .ctc import class_occupancy\nfrom . import ctc\nctc.ctc_loss", []),
    ("seqloss.rnnt", "def _f():\n    pass\n_f()", []),
    ("seqloss._ops", "import torch\ntorch._C._dispatch_get_all_op_names()", []),
    ("recipes.models.objectives", "import seqloss\nseqloss.packed_cells", []),
])
def test_the_checker_flags_each_kind_of_private_use(importer, source, expected):
    assert private_uses(source, importer) == expected


# --------------------------------------------------------------------------- keyword-only booleans
# The drop-in losses keep their peer's argument list, positional booleans included.
DROP_INS = {
    "seqloss.ctc.ctc_loss": F.ctc_loss,
    "seqloss.ctc.simple_ctc_loss": F.ctc_loss,
}
try:
    import torchaudio.functional as TAF
    DROP_INS.update({"seqloss.rnnt.rnnt_loss": TAF.rnnt_loss, "seqloss.rnnt.modified_rnnt_loss": TAF.rnnt_loss})
except ImportError:  # torchaudio is a test peer, not a dependency
    TAF = None


def _is_bool_parameter(parameter: inspect.Parameter) -> bool:
    return isinstance(parameter.default, bool) or parameter.annotation in (bool, "bool")


def _positional_bools(fn) -> list[str]:
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [name for name, p in inspect.signature(fn).parameters.items()
            if p.kind in positional and _is_bool_parameter(p)]


def _seqloss_modules():
    names = ["seqloss"] + [info.name for info in pkgutil.walk_packages(seqloss.__path__, "seqloss.")
                           if _module_path(info.name) is not None]  # not the compiled kernels (_C, _C_cuda)
    modules = []
    for name in names:
        if name == "seqloss.keras":
            os.environ.setdefault("KERAS_BACKEND", "torch")
            pytest.importorskip("keras")
        modules.append(importlib.import_module(name))
    return modules


def _public_callables(module):
    """(qualified name, callable) of the module's own public functions, classes and their public methods."""
    for name, value in vars(module).items():
        if _is_private(name) or getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(value):
            yield f"{module.__name__}.{name}", value
        elif inspect.isclass(value):
            yield f"{module.__name__}.{name}", value
            for attr, member in vars(value).items():
                if inspect.isfunction(member) and not _is_private(attr):
                    yield f"{module.__name__}.{name}.{attr}", member


def test_every_boolean_parameter_is_keyword_only_except_the_drop_ins_peers():
    checked, problems = 0, []
    for module in _seqloss_modules():
        for name, fn in _public_callables(module):
            checked += 1
            allowed = set(_positional_bools(DROP_INS[name])) if name in DROP_INS else set()
            problems += [f"{name}({p})" for p in _positional_bools(fn) if p not in allowed]
    assert checked > 60
    assert not problems, "boolean parameters that can be passed positionally: " + ", ".join(problems)


def test_the_checks_see_a_positional_boolean():
    def flag_after_star(x, *, flag=False):
        return x

    def flag_positional(x, flag: bool = False):
        return x

    assert _positional_bools(flag_after_star) == [] and _positional_bools(flag_positional) == ["flag"]
    assert _positional_bools(seqloss.ctc_loss) == ["zero_infinity"]
    assert _positional_bools(seqloss.rnnt_loss) == ["fused_log_softmax"]


@pytest.mark.parametrize("name", sorted(DROP_INS))
def test_drop_ins_stay_call_compatible_with_their_peer(name):
    """Each peer parameter that can be passed positionally sits at the same position, with the same
    name and default, in the drop-in; every parameter the drop-in adds is keyword-only."""
    ours = inspect.signature(eval(name.replace("seqloss.ctc.", "seqloss.").replace("seqloss.rnnt.", "seqloss.")))
    peer = inspect.signature(DROP_INS[name])
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    peer_params = [p for p in peer.parameters.values() if p.kind in positional]
    our_params = list(ours.parameters.values())
    for index, p in enumerate(peer_params):
        mine = our_params[index]
        assert (mine.name, mine.kind in positional) == (p.name, True), f"{name}: position {index}"
        assert mine.default == p.default, f"{name}({p.name}): default {mine.default!r} != {p.default!r}"
    extra = our_params[len(peer_params):]
    assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for p in extra), [p.name for p in extra]


def test_positional_call_of_the_peer_runs_unchanged_on_the_drop_in():
    gen = torch.Generator().manual_seed(3)
    log_probs = torch.randn(6, 2, 5, generator=gen, dtype=torch.float64).log_softmax(-1)
    args = (log_probs, torch.tensor([[1, 2], [3, 3]]), torch.tensor([6, 4]), torch.tensor([2, 2]), 0, "none", True)
    torch.testing.assert_close(seqloss.ctc_loss(*args), F.ctc_loss(*args))
    if TAF is not None:
        logits = torch.randn(2, 4, 3, 5, generator=gen)
        args = (logits, torch.tensor([[1, 2], [3, 0]], dtype=torch.int32), torch.tensor([4, 3], dtype=torch.int32),
                torch.tensor([2, 1], dtype=torch.int32), 0, -1, "none", False)
        torch.testing.assert_close(seqloss.rnnt_loss(*args), TAF.rnnt_loss(*args))
    with pytest.raises(TypeError):  # final_blank is not in the peer's list: keyword-only
        seqloss.modified_rnnt_loss(torch.randn(1, 2, 2, 3), torch.tensor([[1]]), [2], [1], 0, -1, "none", True, False)


# ------------------------------------------------------------------ one name for the lattice switch
def _lattice_problem():
    gen = torch.Generator().manual_seed(11)
    frames, labels = torch.tensor([4, 3]), torch.tensor([2, 1])
    t, u = torch.arange(4).view(1, -1, 1), torch.arange(3).view(1, 1, -1)
    blank = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64).log_softmax(-1)
    emit = torch.randn(2, 4, 2, generator=gen, dtype=torch.float64).log_softmax(-1)
    blank = torch.where((t < frames.view(-1, 1, 1)) & (u <= labels.view(-1, 1, 1)), blank, float("-inf"))
    emit = torch.where((t < frames.view(-1, 1, 1)) & (u[..., :-1] < labels.view(-1, 1, 1)), emit, float("-inf"))
    return blank, emit, frames, labels


SWITCHED = [transducer_lattice.transducer_log_likelihood, transducer_lattice.transducer_marginals,
            transducer_lattice.transducer_occupancy, viterbi_lattice.transducer_viterbi]
if _ops.CPU_AVAILABLE:
    SWITCHED += [_ops.transducer_marginals, _ops.transducer_viterbi]


@pytest.mark.parametrize("fn", SWITCHED, ids=lambda fn: f"{fn.__module__}.{fn.__name__}")
@pytest.mark.parametrize("one", [False, True])
def test_old_keyword_still_works_with_a_deprecation_warning_naming_the_new_one(fn, one):
    args = _lattice_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new keyword warns about nothing
        expected = fn(*args, one_symbol_per_frame=one)
    with pytest.warns(DeprecationWarning, match="'emit_advances_time' is deprecated.*use 'one_symbol_per_frame'"):
        got = fn(*args, emit_advances_time=one)
    for g, e in zip(got, expected):
        assert torch.equal(g, e)
    with pytest.raises(TypeError, match="one_symbol_per_frame"):
        fn(*args, emit_advances_time=one, one_symbol_per_frame=one)
    with pytest.raises(TypeError):  # keyword-only
        fn(*args, one)
    assert "emit_advances_time" not in inspect.signature(fn).parameters


def test_one_symbol_per_frame_is_the_only_spelling_in_the_python_sources():
    """The old spellings of the switch appear only where the deprecated keyword is accepted."""
    old = ("emit_advances_time", "one_per_frame", "final_blank_only", "one_sym_per_frame=")
    hits = []
    for path, _, _ in _first_party_sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(word in line for word in old) and 'renamed_keyword("emit_advances_time"' not in line:
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    allowed_mentions = ("optimized_transducer's one_sym_per_frame",)  # the peer's own keyword, in docstrings
    hits = [hit for hit in hits if not any(mention in hit for mention in allowed_mentions)]
    assert not hits, "\n".join(hits)


# --------------------------------------------------------------------------------- one return order
BACKENDS = ["torch"] + (["native"] if _ops.CPU_AVAILABLE else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_viterbi_function_returns_path_then_score(backend):
    blank, emit, frames, labels = _lattice_problem()
    for one in (False, True):
        path, score = _backend.transducer_viterbi(backend)(blank, emit, frames, labels, one_symbol_per_frame=one)
        assert path.dtype == torch.int64 and path.shape == (2, 2)
        assert score.dtype == torch.float64 and score.shape == (2,)
    log_probs = torch.randn(5, 2, 4, dtype=torch.float64).log_softmax(-1)
    ext = ctc_extended_labels(torch.tensor([[1, 2], [3, 3]]), 0)
    e = ctc_emissions(log_probs, ext, torch.tensor([5, 5]))
    states, score = _backend.ctc_viterbi(backend)(e, ext, torch.tensor([2, 2]), torch.tensor([5, 5]), 0)
    assert states.dtype == torch.int64 and states.shape == (2, 5)
    assert score.dtype == torch.float64 and score.shape == (2,)
    alignment = seqloss.ctc_align(log_probs, torch.tensor([[1, 2], [3, 3]]), [5, 5], [2, 2], backend=backend)
    labels_, token_frames, scores = alignment  # the public Alignment: path first, score last
    assert labels_.shape == (2, 5) and token_frames.shape == (2, 2)
    torch.testing.assert_close(scores, score)
