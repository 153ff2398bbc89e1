"""The API's own routes: ``/healthz``, the databases and their schemas, and ``/v1/sql``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from text2sql.serve.schemas import SqlRequest

if TYPE_CHECKING:
    from text2sql.serve.answers import Answerer


def api_routes(answerer: Answerer) -> Any:
    """An ``APIRouter`` with the routes, answered by ``answerer``."""
    from fastapi import APIRouter

    router = APIRouter()
    generator, catalog = answerer.generator, answerer.catalog

    @router.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        """Alive, with what is loaded and how busy it is."""
        batches = generator.batches if generator else []
        return {"status": "ok", "model": str(answerer.settings.adapter) if generator else None,
                "databases": len(catalog.names()), "in_flight": answerer.in_flight,
                "queued": generator.queue.qsize() if generator else 0,
                "recent_batches": len(batches),
                "mean_batch_size": round(sum(batches) / len(batches), 2) if batches else None}

    @router.get("/v1/databases", tags=["databases"])
    async def databases() -> dict[str, Any]:
        """The databases of the served folder, by name."""
        return {"databases": [{"name": name, "engine": db.engine}
                              for name, db in catalog.names().items()]}

    @router.get("/v1/databases/{db}/schema", tags=["databases"])
    async def schema(db: str) -> dict[str, Any]:
        """Tables, columns, primary and foreign keys of one database."""
        _db, s = await answerer.in_pool(catalog.schema, db)
        return {"name": db, "tables": [
            {"name": t.name, "primary_key": t.primary_key,
             "columns": [{"name": c.name, "type": c.type} for c in t.columns]}
            for t in s.tables],
            "foreign_keys": [{"table": f.table, "column": f.column, "ref_table": f.ref_table,
                              "ref_column": f.ref_column} for f in s.foreign_keys]}

    @router.post("/v1/sql", tags=["ask"])
    async def sql(req: SqlRequest) -> dict[str, Any]:
        """A question (or your SQL) in; the SQL, its translation and the result table out.

        A query that fails or is refused is still a 200: ``error_kind`` says why
        (``not_read_only``, ``parse_error``, ``unknown_table``, ``unknown_column``,
        ``timeout``, ``execution_error``, ``empty_prediction``)."""
        return await answerer.answer(req)

    return router
