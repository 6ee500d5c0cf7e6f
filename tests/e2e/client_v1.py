"""The MCP Python SDK 1.x client (initialize handshake, Mcp-Session-Id): see `clientlib.py`."""

import asyncio
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


async def main():
    url, headers, actions = clientlib.parse_args()
    for action, target in actions:
        try:
            # The SDK's own read timeout does not cover a transport that never answers.
            await asyncio.wait_for(act(url, headers, action, target), clientlib.ACTION_TIMEOUT + 5)
        except asyncio.TimeoutError:
            clientlib.emit(action, target, False, "timeout")
        except Exception as error:  # noqa: BLE001 - every failure is reported, not raised
            inner = clientlib.leaf(error)
            if isinstance(inner, McpError):
                clientlib.emit(action, target, False, "mcp_error", inner.error.code,
                               inner.error.message, clientlib.data_reason(inner.error.data))
            else:
                status = inner.response.status_code if isinstance(inner, httpx.HTTPStatusError) else None
                clientlib.emit(action, target, False, "transport", status, clientlib.describe(error))


asyncio.run(main())
