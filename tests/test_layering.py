"""The package's layers (docs/design.md): a module imports only its own layer and those below, nothing imports
in a circle, and the layers that promise it import no TensorFlow, not even inside a function."""

import ast
import os

import pytest
from conftest import ROOT

PACKAGE = os.path.join(ROOT, "c2am_tf")
# lower rows never import higher ones (the package's own __init__ and __main__ stand above all)
LAYERS = {"utils": 0, "maps": 0, "backbones": 1, "data": 1, "runtime": 1, "models": 2, "presets": 2,
          "training": 3, "inference": 3, "evaluation": 3, "wsss": 3, "deploy": 3, "cli": 4}
TOP = 5
# what imports without TensorFlow: layer 0, and the device side of deploy/ (numpy and the LiteRT interpreter)
TF_FREE = ("c2am_tf.utils", "c2am_tf.maps", "c2am_tf.deploy.on_device", "c2am_tf.deploy.detect")
TENSORFLOW = ("tensorflow", "keras", "tf_keras", "tensorflow_datasets", "tensorflow_hub")


def _modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
                found[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, name)
    return found


MODULES = _modules()


def _imports(path):
    """[(imported dotted name, line, inside a function)] of a module, each ``from c2am_tf import X`` as c2am_tf.X,
    and each ``importlib.import_module("c2am_tf.X")`` (a literal name) as an import of c2am_tf.X."""
    tree = ast.parse(open(path).read())
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if (isinstance(child, ast.Call) and getattr(child.func, "attr", getattr(child.func, "id", None))
                    == "import_module" and child.args and isinstance(child.args[0], ast.Constant)
                    and isinstance(child.args[0].value, str)):
                found.append((child.args[0].value, child.lineno, in_function))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for alias in child.names:  # a submodule imported by name is an edge to that submodule
                    submodule = f"{child.module}.{alias.name}"
                    if child.module == "c2am_tf" or submodule in MODULES:
                        found.append((submodule, child.lineno, in_function))
                    else:
                        found.append((child.module, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def _public(name):
    """``c2am_tf.C2AM`` (a lazily exported name) -> the module that defines it; a module name stays."""
    import c2am_tf

    attribute = name.split(".", 1)[1] if name.count(".") == 1 else None
    return c2am_tf._PUBLIC.get(attribute, name) if attribute else name


def _owner(name):
    """The package module an imported name belongs to (``c2am_tf.maps.boxes.box_iou`` -> ``c2am_tf.maps.boxes``)."""
    name = _public(name)
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _layer(module):
    parts = module.split(".")
    return LAYERS.get(parts[1], TOP) if len(parts) > 1 else TOP


def _graph():
    """{module: {(imported module, line, inside a function)}} over the package's own modules."""
    return {module: {(_owner(name), line, inner) for name, line, inner in _imports(path)
                     if name.split(".")[0] == "c2am_tf" and _owner(name) not in ("", "c2am_tf", module)}
            for module, path in MODULES.items()}


def test_every_module_has_a_layer_and_the_layers_are_folders():
    flat = [m for m in MODULES if m.count(".") == 1 and m.split(".")[1] not in LAYERS]
    assert sorted(flat) == ["c2am_tf.__main__"], flat  # no flat modules beside the layers' folders
    assert set(LAYERS) == {m.split(".")[1] for m in MODULES if m.count(".") >= 1} - {"__main__"}


def test_no_module_imports_a_higher_layer():
    wrong = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)}) at line {line}"
             for m, targets in _graph().items() for t, line, _ in targets if _layer(t) > _layer(m)]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = {m: {t for t, _, _ in targets} for m, targets in _graph().items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def connect(node):  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            connect(module)
    assert not cycles, cycles


def _folder(module):
    """``c2am_tf.training.trainer`` -> ``c2am_tf.training``: the folder (one idea) a module belongs to."""
    return ".".join(module.split(".")[:2])


def test_no_folder_imports_in_a_circle():
    # module cycles are caught above; two folders of one layer that import each other through different
    # modules are a cycle of ideas too (evaluation -> inference -> wsss -> evaluation was one)
    edges = {}
    for module, targets in _graph().items():
        for target, line, _ in targets:
            if _folder(target) != _folder(module) and _layer(module) < TOP:
                edges.setdefault(_folder(module), {}).setdefault(_folder(target), f"{module}:{line} -> {target}")

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), {}):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    circles = [f"{a} -> {b} ({edges[a][b]}), and back" for a in sorted(edges) for b in sorted(edges[a])
               if a in reach(b)]
    assert not circles, "\n".join(circles)


def test_an_import_inside_a_function_says_why():
    # imports sit at a module's top, unless they defer TensorFlow, OpenCV or an optional extra: then the first
    # import of the function says which, in a comment (the commands in cli/ import their work when run)
    silent = []
    for module, path in MODULES.items():
        if module.startswith("c2am_tf.cli"):
            continue
        lines = open(path).read().split("\n")
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            imports = [n for n in ast.walk(function) if isinstance(n, (ast.Import, ast.ImportFrom))]
            if imports and not any("#" in lines[n.lineno - 1] for n in imports):
                silent.append(f"{module}:{imports[0].lineno}: {lines[imports[0].lineno - 1].strip()}")
    assert not silent, "\n".join(sorted(silent))


def test_the_imports_reader_sees_importlib():
    assert any(name == "c2am_tf.backbones.keras_hub" for name, _, _ in _imports(
        os.path.join(PACKAGE, "backbones", "__init__.py"))), "the keras-hub family is registered by import"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(TF_FREE)))
def test_the_tensorflow_free_layers_import_no_tensorflow(module):
    graph = _graph()
    wrong = [f"line {line}: {name}" for name, line, _ in _imports(MODULES[module])
             if name.split(".")[0] in TENSORFLOW]
    wrong += [f"line {line}: {target}, which is not TensorFlow-free" for target, line, _ in graph[module]
              if not target.startswith(TF_FREE)]
    assert not wrong, f"{module}: " + "; ".join(wrong)


# what a machine with Keras on JAX or PyTorch and no TensorFlow imports: the preset's map network
# (tests/test_presets.py runs it there when torch or jax is installed; CI has neither, so this checks the imports)
KERAS_ONLY = ("c2am_tf.presets",)


@pytest.mark.parametrize("module", KERAS_ONLY)
def test_the_keras_only_modules_import_no_tensorflow_when_imported(module):
    graph, seen, wrong = _graph(), set(), []

    def visit(name):  # what importing ``name`` runs: its top-level imports, and theirs
        if name in seen:
            return
        seen.add(name)
        wrong.extend(f"{name}:{line} imports {imported}" for imported, line, inner in _imports(MODULES[name])
                     if not inner and imported.split(".")[0] in set(TENSORFLOW) - {"keras"})
        for target, _, inner in graph[name]:
            if not inner:
                visit(target)
        parent = name.rpartition(".")[0]
        if parent in MODULES:  # importing a submodule runs its packages' __init__ first
            visit(parent)

    visit(module)
    assert not wrong, "importing " + module + " imports TensorFlow: " + "; ".join(sorted(wrong))
