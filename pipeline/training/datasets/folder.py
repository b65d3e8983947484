"""Placeholder for the folder-of-images source (issue 31, item 3), so that the package
imports until that source lands; it is replaced whole."""

from __future__ import annotations


class ImageFolderSource:
    def __init__(self, root, image_size, channels) -> None:
        raise NotImplementedError("a folder of images as a dataset is not built yet")
