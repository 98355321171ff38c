"""`code_shape`: the shape of the pipeline's adapter layers, as the next engineer meets them.

    python bench/code_shape.py [--root DIR]

Per layer (`tasks/`, `flows/`): lines, the longest function and how many functions exceed
40 lines; in `tasks/`, `flows/`, `configs/` and `storage/` outside the registry (`configs/registry.py`):
the switches on a config name (`name == "…"`, `kind in (…)`, `hasattr(…, "grid_shape")`, …), and the layer-rule
breaks (`flows` importing `vardax_core` or `xarray`/`zarr`; `tasks` or `flows` importing
`xarray`/`zarr`; `vardax_core` importing Prefect, xarray or zarr).
"""

import argparse
import ast
from pathlib import Path

# config fields whose string values name a choice (model, method, covariance, network, …)
_CHOICE_FIELDS = {"name", "kind", "integrator", "operator", "prior", "gradient_mode", "source"}
_FORBIDDEN = {
    "flows": {"vardax_core", "xarray", "zarr"},
    "tasks": {"xarray", "zarr"},
    "vardax_core": {"prefect", "xarray", "zarr", "storage", "tasks", "flows"},
}
_REGISTRY = Path("configs") / "registry.py"


def _functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.end_lineno - node.lineno + 1


def _is_choice(node) -> bool:
    if not (isinstance(node, ast.Attribute) and node.attr in _CHOICE_FIELDS):
        return False
    base = node.value  # not numpy's `dtype.kind`
    return not (isinstance(base, ast.Attribute | ast.Name) and "dtype" in ast.unparse(base))


def _is_str(node) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    return isinstance(node, ast.Tuple | ast.List | ast.Set) and all(map(_is_str, node.elts))


def _switches(tree) -> int:
    n = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(map(_is_choice, sides)) and any(map(_is_str, sides)):
                n += 1
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hasattr":
            if len(node.args) == 2 and _is_str(node.args[1]):
                n += 1
        elif isinstance(node, ast.Dict) and node.keys and all(map(_is_str, node.keys)):
            # a dict from config names to classes: `{"lorenz63": vc.Lorenz63, …}[cfg.name]`
            if any(isinstance(v, ast.Attribute) and v.attr[:1].isupper() for v in node.values):
                n += 1
    return n


def _imports(tree) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def measure(root: Path) -> dict:
    out = {"layers": {}, "switches": {}, "breaks": []}
    for layer in ("tasks", "flows"):
        lines, longest, over = 0, ("", 0), 0
        for path in sorted((root / layer).glob("*.py")):
            text = path.read_text()
            lines += len(text.splitlines())
            for name, n in _functions(ast.parse(text)):
                over += n > 40
                if n > longest[1]:
                    longest = (f"{path.name}:{name}", n)
        out["layers"][layer] = {"lines": lines, "longest": longest, "over_40": over}
    for layer in ("tasks", "flows", "configs", "storage", "vardax_core"):
        for path in sorted((root / layer).glob("*.py")):
            rel = path.relative_to(root)
            tree = ast.parse(path.read_text())
            if layer != "vardax_core" and rel != _REGISTRY and (n := _switches(tree)):
                out["switches"][str(rel)] = n
            for bad in sorted(_imports(tree) & _FORBIDDEN.get(layer, set())):
                out["breaks"].append(f"{rel} imports {bad}")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = p.parse_args()
    m = measure(args.root)
    print("| layer | lines | longest function | functions over 40 lines |")
    print("|---|---|---|---|")
    for layer, v in m["layers"].items():
        name, n = v["longest"]
        print(f"| `{layer}/` | {v['lines']} | {n} (`{name}`) | {v['over_40']} |")
    total = sum(m["switches"].values())
    where = ", ".join(f"{k} {v}" for k, v in m["switches"].items()) or "none"
    print(f"\nconfig-name switches outside the registry: {total} ({where})")
    print(f"layer-rule breaks: {len(m['breaks'])}" + "".join(f"\n- {b}" for b in m["breaks"]))


if __name__ == "__main__":
    main()
