"""Questions and answers about the synthetic media of tools/demo_data.py, and the demo chat format.

Each kind of item has tasks (describe, shape, color, ...), each with a few phrasings of its
question and one templated answer, so answers are learnable and checkable:

    image  "A red circle on the left."    {"shape": "circle", "color": "red", "position": "left"}
    video  "A blue square moving right."  {"shape": "square", "color": "blue", "motion": "right"}
    audio  "A steady 440 Hz tone."        {"sound": "tone", "frequency_hz": 440}
"""

from __future__ import annotations

import json

import numpy as np

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ['image', 'audio', 'video'] %}<{{ part['type'] }}>{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>", "<audio>")
EOS_TOKEN = "<|im_end|>"

_PLACES = {"center": "in the center", "left": "on the left", "right": "on the right", "top": "at the top",
           "bottom": "at the bottom"}
_NUMBERS = {2: "Two", 3: "Three", 4: "Four"}
_HELLO = "Hello! I am a tiny demo model. Show me a shape in an image or a video, or play me a sound, and ask about it."

QUESTIONS = {
    "image": {
        "describe": ("What is in the image?", "Describe the image.", "What do you see?", "What is this?",
                     "Describe it."),
        "shape": ("What shape is it?", "Which shape is shown?", "What shape do you see?"),
        "color": ("What color is the shape?", "What colour is it?", "Which color is it?"),
        "position": ("Where is the shape?", "Where is it?", "Where is the shape in the image?"),
        "json": ("Describe the image as JSON.", "Answer in JSON.", "Give the shape, color and position as JSON."),
    },
    "video": {
        "describe": ("What happens in the video?", "Describe the video.", "What do you see?", "What is this?",
                     "Describe it."),
        "direction": ("Which way does it move?", "Where is the shape going?", "In which direction does it move?"),
        "shape": ("What shape is it?", "Which shape is moving?", "What shape do you see?"),
        "color": ("What color is the shape?", "What colour is it?", "Which color is it?"),
        "json": ("Describe the video as JSON.", "Answer in JSON.", "Give the shape, color and motion as JSON."),
    },
    "audio": {
        "describe": ("What do you hear?", "Describe the sound.", "What is this sound?", "What is this?",
                     "Describe it."),
        "pitch": ("What is the frequency?", "What pitch is it?", "How high is the tone?"),
        "count": ("How many beeps are there?", "Count the beeps."),
        "json": ("Describe the sound as JSON.", "Answer in JSON.", "Give the sound as JSON."),
    },
    "text": {
        "hello": ("Hello", "Hi", "Hello!", "Hi there", "What can you do?", "Who are you?", "Help"),
    },
}


def _a(word: str) -> str:
    return ("An " if word[0] in "aeiou" else "A ") + word


def describe(kind: str, meta: dict) -> str:
    if kind == "image":
        return f"{_a(meta['color'])} {meta['shape']} {_PLACES[meta['position']]}."
    if kind == "video":
        return f"{_a(meta['color'])} {meta['shape']} moving {meta['direction']}."
    if meta["sound"] == "tone":
        return f"A steady {meta['frequency_hz']} Hz tone."
    if meta["sound"] == "chirp":
        return f"A {meta['direction']} chirp."
    return f"{_NUMBERS[meta['count']]} short beeps."


def as_json(kind: str, meta: dict) -> str:
    if kind == "image":
        fields = {"shape": meta["shape"], "color": meta["color"], "position": meta["position"]}
    elif kind == "video":
        fields = {"shape": meta["shape"], "color": meta["color"], "motion": meta["direction"]}
    else:
        fields = dict(meta)
    return json.dumps(fields)


def answer(kind: str, task: str, meta: dict) -> str:
    """The one right answer to a `task` question about an item of `kind` with facts `meta`."""
    if task == "hello":
        return _HELLO
    if task == "describe":
        return describe(kind, meta)
    if task == "json":
        return as_json(kind, meta)
    if task == "shape":
        return f"It is a {meta['shape']}."
    if task == "color":
        return f"It is {meta['color']}."
    if task == "position":
        return f"It is {_PLACES[meta['position']]}."
    if task == "direction":
        return f"It moves {meta['direction']}."
    if task == "pitch":
        if meta["sound"] == "tone":
            return f"{meta['frequency_hz']} Hz."
        return f"It is not a steady tone: {_lower_first(describe(kind, meta))}"
    if task == "count":
        if meta["sound"] == "beeps":
            return f"{_NUMBERS[meta['count']]} beeps."
        return f"There are no beeps: {_lower_first(describe(kind, meta))}"
    raise ValueError(f"unknown task {task!r}")


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:]


# How often each task is trained, per kind of item.
TASK_WEIGHTS = {
    "image": {"describe": 3, "shape": 1, "color": 1, "position": 1, "json": 2},
    "video": {"describe": 3, "direction": 1, "shape": 1, "color": 1, "json": 3},
    "audio": {"describe": 3, "pitch": 1, "count": 1, "json": 2},
}


def draw_question(rng: np.random.Generator, kind: str) -> tuple[str, str]:
    """(task, question) for an item of `kind`, tasks drawn by TASK_WEIGHTS."""
    weights = TASK_WEIGHTS[kind]
    tasks = list(weights)
    p = np.array([weights[t] for t in tasks], dtype=float)
    task = tasks[int(rng.choice(len(tasks), p=p / p.sum()))]
    phrasings = QUESTIONS[kind][task]
    return task, phrasings[int(rng.integers(len(phrasings)))]


def chat(kind: str, question: str, media_first: bool = True) -> list[dict]:
    """The user message as the engine's chat prompt takes it (the media part without its data)."""
    if kind == "text":
        return [{"role": "user", "content": question}]
    media = {"type": "video" if kind == "video" else kind}
    parts = [media, {"type": "text", "text": question}]
    return [{"role": "user", "content": parts if media_first else parts[::-1]}]


def corpus() -> list[str]:
    """Every question and a spread of answers: what the tokenizer is trained on."""
    from tools import demo_data

    texts = [q for kinds in QUESTIONS.values() for qs in kinds.values() for q in qs]
    texts.append(_HELLO)
    metas = {"image": [{"shape": s, "color": c, "position": p} for s in demo_data.SHAPES
                       for c in demo_data.COLORS for p in demo_data.POSITIONS],
             "video": [{"shape": s, "color": c, "direction": d} for s in demo_data.SHAPES
                       for c in demo_data.COLORS for d in demo_data.DIRECTIONS],
             "audio": ([{"sound": "tone", "frequency_hz": f} for f in demo_data.TONES_HZ]
                       + [{"sound": "chirp", "direction": d} for d in ("rising", "falling")]
                       + [{"sound": "beeps", "count": n} for n in demo_data.BEEP_COUNTS])}
    for kind, items in metas.items():
        for meta in items:
            texts += [answer(kind, task, meta) for task in TASK_WEIGHTS[kind]]
    return texts
