"""Datasets by name. ``load_dataset(name, **params)`` rebuilds exactly what an artifact recorded."""

from __future__ import annotations

from .base import DataError, ImageDataset, LabelSet

LOADERS = {
    "avatars": "training.data.avatars:load_avatars",
    "fashion-mnist": "training.data.fashion_mnist:load_fashion_mnist",
    "celeba": "training.data.celeba:load_celeba",
    "folder": "training.data.folder:load_folder",
}


def load_dataset(name: str, **params) -> ImageDataset:
    import importlib
    import inspect

    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}; choose from {sorted(LOADERS)}")
    module, fn = LOADERS[name].split(":")
    loader = getattr(importlib.import_module(module), fn)
    accepted = inspect.signature(loader).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise DataError(f"dataset {name!r} takes no parameter(s) {unknown}; it takes {sorted(accepted)}")
    return loader(**params)


__all__ = ["DataError", "ImageDataset", "LabelSet", "LOADERS", "load_dataset"]
