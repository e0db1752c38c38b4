"""Helpers shared by the engines (llama.cpp, mlx, the session server's client): messages, schema, answers."""

from __future__ import annotations

from typing import Any


def chat_messages(request: Any) -> list[dict[str, str]]:
    """The chat messages of a dspy LM request (its system text first), as OpenAI-style dicts."""
    messages = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
    return messages


def json_schema(response_format: Any) -> dict[str, Any] | None:
    """Pull the JSON schema out of an OpenAI-style ``response_format``, if it has one."""
    if not isinstance(response_format, dict):
        return None
    if isinstance(response_format.get("schema"), dict):
        return response_format["schema"]
    nested = response_format.get("json_schema")
    return nested.get("schema") if isinstance(nested, dict) else None


def openai_response(result: dict[str, Any], model: str) -> Any:
    """A dspy ``Response`` of an OpenAI-style chat completion (llama.cpp's, or the session server's)."""
    from dspy.lm15 import Message, Response, TextPart, Usage

    choice = result["choices"][0]
    usage = result.get("usage") or {}
    return Response(
        id=result.get("id"),
        model=result.get("model", model),
        message=Message.assistant([TextPart(choice["message"].get("content") or "")]),
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        usage=Usage(
            input_tokens=usage.get("prompt_tokens"),
            output_tokens=usage.get("completion_tokens"),
            total_tokens=usage.get("total_tokens"),
        ),
    )
