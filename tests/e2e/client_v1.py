"""The MCP Python SDK 1.x client (initialize handshake, Mcp-Session-Id): see `clientlib.py`."""

from datetime import timedelta

import httpx
from mcp import ClientSession, McpError
from mcp.client.streamable_http import streamable_http_client

import clientlib


async def act(url, headers, action, target):
    async with httpx.AsyncClient(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write, _):
            timeout = timedelta(seconds=clientlib.ACTION_TIMEOUT)
            async with ClientSession(read, write, read_timeout_seconds=timeout) as session:
                await session.initialize()
                if action == "tools/call":
                    result = await session.call_tool(target, {})
                    clientlib.report(action, target, result, result.isError)
                elif action == "prompts/get":
                    clientlib.report(action, target, await session.get_prompt(target), False)
                else:
                    clientlib.report(action, target, await session.read_resource(target), False)


def mcp_error(error):
    return (error.error.code, error.error.message, error.error.data) if isinstance(error, McpError) else None


def http_status(error):
    return error.response.status_code if isinstance(error, httpx.HTTPStatusError) else None


clientlib.run(act, mcp_error, http_status)
