"""docs/training.md's table of every recipe key, generated from the schema's field descriptions."""
from __future__ import annotations

import json

from pydantic import BaseModel

from .recipe_schema import Recipe, _Toggle


def key_table() -> str:
    """The Markdown table of every recipe key, its default and its description, from the schema
    (docs/training.md holds it; a test keeps the two the same). Regenerate it with
    ``python -c "from audiostem.recipe_doc import key_table; print(key_table())"``."""
    lines = ["| key | default | meaning |", "|---|---|---|"]

    def shown(field) -> str:
        extra = field.json_schema_extra or {}
        if "shown" in extra:
            return extra["shown"]
        if field.is_required():
            return "required"
        value = field.get_default(call_default_factory=True)
        if isinstance(value, _Toggle):
            return "off"
        if isinstance(value, BaseModel):          # a section: its keys follow
            return ""
        if value is None:
            return "none"
        return f"`{value if isinstance(value, str) else json.dumps(value)}`"

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            lines.append(f"| `{prefix}{name}` | {shown(field)} | {field.description or ''} |")
            for sub in getattr(field.annotation, "__args__", (field.annotation,)):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    walk(sub, f"{prefix}{name}.")
    walk(Recipe, "")
    return "\n".join(lines)
