"""Where a run keeps each unit of work it can resume (a grid cell, a watershed's model): one folder per
cell under the run's checkpoints, holding the cell's checkpoints and, once it finished, its result as
JSON, written atomically. --resume takes a finished cell's result instead of training it again; a new
run (no --resume) starts from an empty store, since what is there is another run's."""
from __future__ import annotations

import json

from rdd_io import storage

RESULT = "result.json"


class CellStore:
    def __init__(self, root: str, resume: bool):
        self.root, self.resume = root, resume

    def folder(self, cell: str) -> str:
        return storage.join(self.root, cell)

    def path(self, cell: str, name: str) -> str:
        return storage.join(self.root, cell, name)

    def finished(self, cell: str, name: str = RESULT) -> dict | None:
        """With --resume, the result a cell wrote when it finished before; else None (train it)."""
        uri = self.path(cell, name)
        return json.loads(storage.read_text(uri)) if self.resume and storage.exists(uri) else None

    def is_finished(self, cell: str, name: str = RESULT) -> bool:
        """Whether the cell has its result, whatever the run's mode (which cell was running when it stopped)."""
        return storage.exists(self.path(cell, name))

    def finish(self, cell: str, result: dict, name: str = RESULT) -> None:
        storage.write_text(self.path(cell, name), json.dumps(result))

    def clear(self, cell: str | None = None) -> None:
        """Remove a cell's folder (or the whole store): a new run's, not another's, checkpoints go there."""
        storage.remove_tree(self.folder(cell) if cell else self.root)
