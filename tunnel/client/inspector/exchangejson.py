"""
The captured exchanges as the inspector's JSON API and page see them: a
summary per exchange for the list, and the whole of one for its detail.
"""

from __future__ import annotations

import base64
from typing import Any

from tunnel.core.bodyview import viewBody
from tunnel.core.capture import CapturedExchange, CapturedMessage, ExchangeState, MessageState


def _messageJSON(message: CapturedMessage) -> dict[str, Any]:
    complete = message.state is MessageState.COMPLETE and not message.truncated
    view = viewBody(
        bytes(message.body),
        message.header("content-type"),
        message.header("content-encoding"),
        complete,
    )
    return {
        "state": message.state.value,
        "headers": [[name, value] for name, value in message.textHeaders()],
        "bytes": message.wireBytes,
        "bodyKept": len(message.body),
        "truncated": message.truncated,
        "error": message.error,
        "body": {
            "kind": view.kind.value,
            "text": view.text,
            "contentType": view.contentType,
            "encoding": view.encoding,
            "decoded": view.decoded,
            "base64": base64.b64encode(message.body).decode("ascii"),
        },
    }


def summaryJSON(exchange: CapturedExchange, now: float) -> dict[str, Any]:
    """What the list shows of C{exchange}, at C{now} (for the duration of an open one)."""
    return {
        "id": exchange.id,
        "kind": exchange.kind.value,
        "state": exchange.state.value,
        "started": exchange.started,
        "durationMs": round(exchange.duration(now) * 1000, 3),
        "method": exchange.method,
        "target": exchange.target,
        "host": exchange.host,
        "source": exchange.source,
        "status": exchange.status,
        "reason": exchange.reason,
        "bytesIn": exchange.bytesIn,
        "bytesOut": exchange.bytesOut,
        "truncated": exchange.truncated,
        "local": None if exchange.destination is None else str(exchange.destination),
        "refusal": exchange.refusal,
        "problem": exchange.problem,
        "replayOf": exchange.replayOf,
    }


def detailJSON(exchange: CapturedExchange, now: float) -> dict[str, Any]:
    """The whole of C{exchange}: its summary, and both directions' heads and bodies."""
    detail = summaryJSON(exchange, now)
    detail["request"] = _messageJSON(exchange.request)
    detail["response"] = _messageJSON(exchange.response)
    detail["open"] = exchange.state is ExchangeState.OPEN
    return detail
