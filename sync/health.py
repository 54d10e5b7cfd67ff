"""The default health check of a bundle on trial.

The agent passes its own check (tiles open, the ONNX model answers a probe, the planner returns
a validated route at a known point); this default covers what sync/ can check without the
planner: the tile database opens read-only and loads a tile, the demand table loads (with
``models.predict.open_demand``, which also loads a shipped ONNX model and checks its feature
spec) and belongs to the same network, the ONNX model answers a probe of zeros, and a shipped
supply prior (``supply.npz``) loads and names only links of the tiles.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from sync.bundle import Bundle
from sync.errors import HealthCheckError

log = logging.getLogger(__name__)

_ORT_FLOAT = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def default_health_check(bundle: Bundle) -> None:
    """Raise :class:`HealthCheckError` unless the bundle's data loads and agrees."""
    from models import ModelsError
    from models.predict import open_demand
    from tiles import TilesError, TileStore

    try:
        store = TileStore(bundle.tiles_path)
    except TilesError as e:
        raise HealthCheckError(f"tiles do not open: {e}") from e
    try:
        if not store.tiles:
            raise HealthCheckError("tile database has no tiles")
        store.load_tile(store.tiles[0].tile_id)
        n_edges = store.n_edges_total
        network = store.meta.get("source_sha256")
    except TilesError as e:
        raise HealthCheckError(f"tiles do not load: {e}") from e
    finally:
        store.close()
    try:
        # the table and, when one shipped, the ONNX model with its feature spec checked
        table, _model = open_demand(bundle.demand_dir)
    except ModelsError as e:
        raise HealthCheckError(f"demand does not load: {e}") from e
    if table.n_edges != n_edges or table.network_sha256 != network:
        raise HealthCheckError(
            f"demand table is for network {table.network_sha256[:12]} with {table.n_edges} "
            f"edges, tiles are {str(network)[:12]} with {n_edges}"
        )
    if bundle.onnx_path is not None:
        probe_onnx(str(bundle.onnx_path))
    if bundle.supply_path is not None:
        from models.supply import SupplyTable

        try:
            supply = SupplyTable.load(bundle.supply_path)
        except ModelsError as e:
            raise HealthCheckError(f"supply prior does not load: {e}") from e
        if supply.edge_id.size and int(supply.edge_id[-1]) >= n_edges:
            raise HealthCheckError(
                f"supply prior names link {int(supply.edge_id[-1])}, tiles have {n_edges}"
            )


def probe_onnx(path: str) -> None:
    """Load an ONNX model and run it once on zeros (dynamic dimensions set to 1)."""
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feeds: dict[str, Any] = {}
        for inp in sess.get_inputs():
            dtype = _ORT_FLOAT.get(inp.type)
            if dtype is None:
                raise HealthCheckError(f"ONNX input {inp.name} has unsupported type {inp.type}")
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
            feeds[inp.name] = np.zeros(shape, dtype=dtype)
        outs = sess.run(None, feeds)
    except HealthCheckError:
        raise
    except Exception as e:  # onnxruntime raises its own (non-exported) exception types
        raise HealthCheckError(f"ONNX model does not load or answer: {e}") from e
    for o in outs:
        if not np.all(np.isfinite(np.asarray(o, dtype=np.float64))):
            raise HealthCheckError("ONNX model answered the probe with NaN or infinity")
