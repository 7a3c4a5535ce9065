"""Chat template rendering: the Jinja environment, errors, message handling, parity with transformers."""

from __future__ import annotations

import copy
import json
from datetime import datetime

import pytest

from llm_core.chat_template import compile_template, render
from llm_core.tokenizer import Tokenizer
from tests.helpers.tokenizers import make_tokenizer_dir

USER = [{"role": "user", "content": "hi"}]

# A Qwen-like template with tools, reasoning, a namespace, loop controls and tojson options.
TOOL_TEMPLATE = """{%- if tools %}
<|im_start|>system
{{ messages[0].content if messages[0].role == 'system' else 'You can call tools.' }}
{% for tool in tools %}
{{ tool | tojson }}
{% endfor %}
<|im_end|>
{% elif messages[0].role == 'system' %}
<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- set ns = namespace(last_user=0) %}
{%- for message in messages %}
    {%- if message.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.role == 'system' %}{% continue %}{% endif %}
<|im_start|>{{ message.role }}
    {%- if message.reasoning_content and loop.index0 > ns.last_user %}
<think>{{ message.reasoning_content | trim }}</think>
    {%- endif %}
{{ message.content if message.content is string else message.content | tojson(indent=2, sort_keys=true) }}
    {%- if message.tool_calls %}{% for call in message.tool_calls %}
<tool_call>{{ call | tojson(separators=(',', ':')) }}</tool_call>{% endfor %}{% endif %}<|im_end|>
{% endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and not enable_thinking %}<think>

</think>

{% endif %}{% endif %}"""


def _render(template: str, messages=USER, **kwargs) -> str:
    return render(template, messages, **kwargs)


def test_trim_and_lstrip_blocks():
    template = "{% for m in messages %}\n    {{ m.role }}\n    {% if m.content %}\n!\n    {% endif %}\n{% endfor %}"
    assert _render(template, USER + [{"role": "assistant", "content": ""}]) == "    user\n!\n    assistant\n"


def test_loop_controls():
    template = "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}" \
               "{% if m.role == 'system' %}{% continue %}{% endif %}{{ m.role }};{% endfor %}"
    messages = [{"role": "system"}, {"role": "user"}, {"role": "assistant"}]
    assert _render(template, messages) == "user;"


def test_generation_prompt_and_special_tokens():
    template = "{{ bos_token is defined }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools }}"
    assert _render(template, bos_token=None, eos_token="</s>", add_generation_prompt=True) == "False|</s>|True|None"
    assert _render("{{ bos_token }}x", bos_token="<s>") == "<s>x"


def test_tojson_keeps_unicode_and_html_and_takes_options():
    messages = [{"role": "user", "content": "<b>é</b> & 你"}]
    assert _render("{{ messages[0] | tojson }}", messages) == json.dumps(messages[0], ensure_ascii=False)
    assert _render("{{ {'b': 1, 'a': [2]} | tojson(indent=2, sort_keys=true) }}") == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}'
    assert _render("{{ {'a': 1} | tojson(separators=(',', ':')) }}") == '{"a":1}'


def test_strftime_now_and_dict_and_namespace():
    assert _render("{{ strftime_now('%Y') }}") == str(datetime.now().year)
    assert _render("{{ dict(a=1)['a'] }}") == "1"
    assert _render("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                   "{% endfor %}{{ ns.n }}", USER * 3) == "3"


def test_raise_exception_becomes_value_error_with_its_message():
    template = "{% if messages[0].role != 'system' %}{{ raise_exception('Conversations must start with system') }}{% endif %}"
    with pytest.raises(ValueError, match="Conversations must start with system"):
        _render(template)


@pytest.mark.parametrize("template, match", [
    ("{% for m in messages %}{{ m.role }}", "syntax error"),
    ("{{ missing.attribute }}", "missing"),
    ("{{ messages[0].content + 1 }}", "TypeError"),
    ("{{ ''.__class__.__mro__ }}", "unsafe|__class__|__mro__"),
    ("{% set x = messages.append(1) %}", "append"),
    ("{% set ns = namespace(_private=1) %}", "_private"),
])
def test_template_errors_are_value_errors(template, match):
    with pytest.raises(ValueError, match=match):
        _render(template)


def test_content_parts_reach_the_template_unchanged():
    parts = [{"type": "text", "text": "what is"}, {"type": "image"}, {"type": "audio", "duration": 1.5}]
    messages = [{"role": "user", "content": parts}]
    assert _render("{{ messages[0].content | tojson }}", messages) == json.dumps(parts)


def test_messages_are_cleaned_as_transformers_does_without_being_modified():
    class Picture:
        pass

    messages = [{"role": "user", "content": [{"type": "image", "image": Picture()}]},
                {"role": "assistant", "content": None, "reasoning": "because"}]
    before = copy.deepcopy(messages)
    template = "{{ messages[0].content[0].image }}|{{ 'content' in messages[1] }}|{{ messages[1].reasoning_content }}"
    assert _render(template, messages) == "<Picture>|False|because"
    assert messages[1] == before[1] and messages[0]["content"][0]["image"] is not None


def test_compiled_templates_are_cached():
    assert compile_template("{{ 1 }}") is compile_template("{{ 1 }}")


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace"])
def test_complex_template_matches_transformers(tmp_path, kind):
    from transformers import AutoTokenizer

    path = make_tokenizer_dir(tmp_path, kind=kind, chat_template=TOOL_TEMPLATE)
    ours, theirs = Tokenizer.from_dir(path), AutoTokenizer.from_pretrained(path)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"city": {"type": "string"}}}}]
    conversations = [
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Weather in Zürich?"},
         {"role": "assistant", "content": "", "reasoning_content": " Call the tool. ",
          "tool_calls": [{"name": "get_weather", "arguments": {"city": "Zürich"}}]},
         {"role": "tool", "content": '{"temp": 21}'}],
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe <this>."}]}],
    ]
    for messages in conversations:
        for kwargs in ({}, {"enable_thinking": False}):
            for prompt in (True, False):
                expected = theirs.apply_chat_template(messages, tools=tools, tokenize=False,
                                                      add_generation_prompt=prompt, **kwargs)
                assert ours.apply_chat_template(messages, add_generation_prompt=prompt, tools=tools, **kwargs) == expected
                expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
                assert ours.apply_chat_template(messages, add_generation_prompt=prompt) == expected
