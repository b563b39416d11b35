"""The official Prithvi-EO model code, as an external reference for our encoder.

``prithvi_mae.py`` (the encoder) and ``prithvi_vit.py`` (the registry's configs) ship in the
terratorch wheel on PyPI. They are downloaded once (``pip download --no-deps``) into a cache
beside the virtual environment and imported or read by path, without installing terratorch
and its dependencies: ``prithvi_mae.py`` needs only torch, numpy, timm and einops (a dev
extra). Nothing of it is copied into this repository.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from functools import cache
from pathlib import Path

TERRATORCH = "terratorch==1.2.13"
FILES = ("terratorch/models/backbones/prithvi_mae.py", "terratorch/models/backbones/prithvi_vit.py")
CACHE = Path(os.environ.get("INSTAGEO_REFERENCE_CACHE", Path(sys.prefix) / "reference")) / TERRATORCH.replace("==", "-")


def reference_file(name: str) -> Path:
    """A file of the terratorch wheel, downloaded into the cache on first use."""
    if not all((CACHE / f).exists() for f in FILES):
        with tempfile.TemporaryDirectory() as download:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--disable-pip-version-check",
                            "-d", download, TERRATORCH], check=True)
            wheel = next(Path(download).glob("terratorch-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                for member in FILES:
                    target = CACHE / member
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(member))
    return CACHE / next(f for f in FILES if f.endswith(name))


@cache
def prithvi_mae():
    """The official module (PrithviViT, PrithviMAE, get_3d_sincos_pos_embed, ...)."""
    spec = importlib.util.spec_from_file_location("reference_prithvi_mae", reference_file("prithvi_mae.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def prithvi_configs() -> dict[str, dict]:
    """terratorch's ``prithvi_cfgs``: {name: config}, read from its source (the module itself
    imports all of terratorch). Each config is ``_cfg(**overrides)`` over ``_cfg``'s defaults."""
    tree = ast.parse(reference_file("prithvi_vit.py").read_text())
    constants, defaults, configs = {}, {}, {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.isupper():
                try:
                    constants[name] = ast.literal_eval(node.value)
                except ValueError:
                    pass
            elif name == "prithvi_cfgs":
                for key, call in zip(node.value.keys, node.value.values):
                    configs[ast.literal_eval(key)] = {k.arg: _value(k.value, constants) for k in call.keywords}
        elif isinstance(node, ast.FunctionDef) and node.name == "_cfg":
            body = next(n for n in node.body if isinstance(n, ast.Return)).value
            defaults = {ast.literal_eval(k): _value(v, constants) for k, v in zip(body.keys, body.values)
                        if k is not None}
    return {name: {**defaults, **overrides} for name, overrides in configs.items()}


def _value(node, constants):
    if isinstance(node, ast.Name):
        return constants.get(node.id, node.id)
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None  # e.g. the bands list of enums: not compared
