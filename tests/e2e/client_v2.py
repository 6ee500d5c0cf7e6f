"""The MCP Python SDK 2.x client (protocol 2026-07-28: no initialize, no Mcp-Session-Id; every
POST carries mcp-protocol-version, mcp-method and mcp-name): see `clientlib.py`."""

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

import clientlib


async def act(url, headers, action, target):
    async with httpx2.AsyncClient(headers=headers) as http:
        transport = streamable_http_client(url, http_client=http)
        # `auto` asks server/discover and settles on 2026-07-28 with a server that speaks it.
        async with Client(transport, read_timeout_seconds=clientlib.ACTION_TIMEOUT) as client:
            if client.protocol_version != "2026-07-28":
                raise RuntimeError(f"negotiated {client.protocol_version}, not 2026-07-28")
            if action == "tools/call":
                result = await client.call_tool(target, {})
                clientlib.report(action, target, result, result.is_error)
            elif action == "prompts/get":
                clientlib.report(action, target, await client.get_prompt(target), False)
            else:
                clientlib.report(action, target, await client.read_resource(target), False)


def mcp_error(error):
    return (error.code, error.message, error.data) if isinstance(error, MCPError) else None


clientlib.run(act, mcp_error)
