"""The ingestion benchmark's reference: the same HTTP stack as ``ccpush serve`` (uvicorn,
FastAPI, uvloop) with one route that reads the body, parses the JSON and answers 202,
without validating, authenticating or storing anything: the ceiling of the stack.

    .venv/bin/python bench/ref_server.py PORT
"""

from __future__ import annotations

import json
import sys

import uvicorn
from fastapi import FastAPI, Request, Response

api = FastAPI()


@api.post("/v1/apps/{app_id}/call-records", status_code=202)
async def ingest(app_id: str, request: Request) -> Response:
    data = json.loads(await request.body())
    count = len(data) if isinstance(data, list) else 1
    return Response(f'{{"accepted":{count}}}', status_code=202, media_type="application/json")


if __name__ == "__main__":
    uvicorn.run(api, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
