"""ServiceConfig: defaults, flags with vLLM's names, TRIBUTARY_* variables, validation, --help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.config import ServiceConfig, load_config
from service.options import OPTIONS

VLLM_FLAGS = ("--max-num-seqs", "--max-num-batched-tokens", "--max-model-len", "--block-size",
              "--enable-prefix-caching", "--no-enable-prefix-caching", "--gpu-memory-utilization", "--dtype",
              "--seed", "--scheduling-policy", "--speculative-config", "--tensor-parallel-size", "--api-key")


def test_defaults_need_no_disk_and_report_every_service_limit():
    config = load_config([], environ={})
    assert config == ServiceConfig()
    assert set(config.limits()) == {"max_message_bytes", "max_item_bytes", "max_session_media_bytes",
                                    "max_items_per_session", "max_responses_per_session", "max_sessions",
                                    "idle_timeout_s"}
    assert dict(config.engine_options) == {}


def test_flags_fill_the_config_and_engine_options():
    config = load_config(["--model", "/m", "--port", "9000", "--max-num-seqs", "8", "--no-enable-prefix-caching",
                          "--speculative-config", '{"method": "ngram", "num_tokens": 3}', "--scheduling-policy",
                          "priority", "--api-key", "k", "--allowed-origins", "https://a.example, https://b.example",
                          "--max-sessions", "5", "--engine-mode", "thread", "--kv-cache-bytes", "1000"], environ={})
    assert (config.model, config.port, config.api_key, config.max_sessions) == ("/m", 9000, "k", 5)
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert dict(config.engine_options) == {"max_num_seqs": 8, "enable_prefix_caching": False,
                                           "speculative": {"method": "ngram", "num_tokens": 3},
                                           "scheduling_policy": "priority", "cpu_kv_cache_bytes": 1000}
    assert config.engine_mode == "thread" and config.model_name == "m"


def test_environment_mirrors_every_flag_and_flags_win():
    environ = {"TRIBUTARY_PORT": "7000", "TRIBUTARY_MAX_NUM_SEQS": "4", "TRIBUTARY_ENABLE_PREFIX_CACHING": "false",
               "TRIBUTARY_IDLE_TIMEOUT_S": "2.5", "TRIBUTARY_API_KEY": "env-key"}
    config = load_config(["--port", "7001"], environ=environ)
    assert (config.port, config.idle_timeout_s, config.api_key) == (7001, 2.5, "env-key")
    assert dict(config.engine_options) == {"max_num_seqs": 4, "enable_prefix_caching": False}
    assert len({option.env for option in OPTIONS}) == len(OPTIONS)


@pytest.mark.parametrize("argv, environ", [
    (["--port", "x"], {}), (["--max-sessions", "0"], {}), (["--engine-mode", "fork"], {}),
    ([], {"TRIBUTARY_PORT": "eighty"}), ([], {"TRIBUTARY_SCHEDULING_POLICY": "random"}),
    (["--speculative-config", "[1]"], {}), (["--api-key", ""], {}),
])
def test_bad_values_exit_with_a_message(argv, environ, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_config(argv, environ=environ)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_media_limits_are_capped_by_the_item_limit():
    limits = ServiceConfig(max_item_bytes=1000).media_limits
    assert limits.max_image_bytes == limits.max_video_bytes == limits.max_audio_bytes == 1000


def test_help_lists_every_option():
    result = subprocess.run([sys.executable, "-m", "service", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in {option.flag for option in OPTIONS} | set(VLLM_FLAGS):
        assert flag in result.stdout, flag
    for option in OPTIONS:
        assert option.env in result.stdout.replace("\n", "").replace(" ", ""), option.env


@pytest.mark.parametrize("argv, environ, endpoint", [
    ([], {}, None),
    ([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318/"}, "http://jaeger:4318/v1/traces"),
    ([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/t"},
     "http://b:4318/t"),
    (["--otlp-traces-endpoint", "http://c:4318/v1/traces"], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318"},
     "http://c:4318/v1/traces"),
    ([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_SDK_DISABLED": "true"}, None),
    ([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_TRACES_EXPORTER": "none"}, None),
])
def test_tracing_follows_the_standard_otel_variables(argv, environ, endpoint):
    config = load_config(argv, environ={**environ, "OTEL_SERVICE_NAME": "edge-1"})
    assert (config.otlp_traces_endpoint, config.otel_service_name) == (endpoint, "edge-1")


@pytest.mark.parametrize("argv, environ", [
    (["--otlp-traces-endpoint", "jaeger:4318"], {}),
    ([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}),
])
def test_bad_tracing_settings_exit_with_a_message(argv, environ, capsys):
    with pytest.raises(SystemExit):
        load_config(argv, environ=environ)
    assert "error:" in capsys.readouterr().err


def test_profiler_flags_are_engine_options():
    config = load_config(["--profile-steps", "20", "--profile-dir", "/tmp/p"], environ={})
    assert dict(config.engine_options) == {"profile_steps": 20, "profile_dir": "/tmp/p"}
