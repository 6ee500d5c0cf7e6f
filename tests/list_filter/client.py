"""The MCP Python SDK 1.x client of `tests/list_filter_e2e.rs`: runs a script of actions through
Envoy, each in a session of its own (a denial may end a session), printing one JSON line each.

    python client.py URL '{"x-mcp-agent-id": "reader-bot"}' '[{"do": "list_tools"}, ...]'

Actions: `list_tools` (the names, and the `x-would-hide` of the answer); `call` with `name`
(`denied` is mcp-authz's reason, or the HTTP status of a plain denial, else null); `progress`
with `ack` (calls wait_for_ack and acknowledges its first progress notification by creating the
file `ack`).
"""

import asyncio
import json
import pathlib
import sys
from datetime import timedelta

import httpx
from mcp import ClientSession, McpError
from mcp.client.streamable_http import streamable_http_client


def emit(**fields):
    print(json.dumps(fields), flush=True)


def leaf(error):
    """The innermost exception of the task groups the SDK raises through."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


async def run(url, headers, action):
    would_hide = {}

    async def seen(response):
        # The header rides on the HTTP answer, which the SDK does not show.
        try:
            method = json.loads(response.request.content).get("method")
        except (ValueError, AttributeError):
            return
        if method and "x-would-hide" in response.headers:
            would_hide[method] = int(response.headers["x-would-hide"])

    http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=60),
                             event_hooks={"response": [seen]})
    async with http, streamable_http_client(url, http_client=http) as (read, write, _):
        async with ClientSession(read, write, read_timeout_seconds=timedelta(seconds=60)) as session:
            await session.initialize()
            if action["do"] == "list_tools":
                tools = (await session.list_tools()).tools
                emit(do="list_tools", names=[t.name for t in tools],
                     would_hide=would_hide.get("tools/list"))
            elif action["do"] == "call":
                result = await session.call_tool(action["name"], {})
                text = "".join(c.text for c in result.content if c.type == "text")
                denied = (result.meta or {}).get("mcp-authz/reason") if result.isError else None
                emit(do="call", name=action["name"], denied=denied, length=len(text))
            elif action["do"] == "progress":
                ack = pathlib.Path(action["ack"])
                progress = []

                async def on_progress(done, total, message):
                    progress.append(message)
                    ack.touch()

                result = await session.call_tool("wait_for_ack", {"ack": str(ack)},
                                                 progress_callback=on_progress)
                text = "".join(c.text for c in result.content if c.type == "text")
                emit(do="progress", text=text, progress=progress)


async def main():
    url, headers, script = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    for action in script:
        try:
            await asyncio.wait_for(run(url, headers, action), 90)
        except Exception as error:  # noqa: BLE001 - a denial is an outcome, not a failure
            inner = leaf(error)
            if isinstance(inner, httpx.HTTPStatusError):
                denied = inner.response.status_code
            elif isinstance(inner, McpError):
                denied = (inner.error.data or {}).get("reason") or inner.error.code
            else:
                denied = f"{type(inner).__name__}: {inner}"
            emit(do=action["do"], name=action.get("name"), denied=denied)


asyncio.run(main())
