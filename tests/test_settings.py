"""Settings as a user sets them: ``%config KimiMagic``, ``%%kimi --system`` and plain Python."""

from __future__ import annotations

import ast

import pytest
from IPython.utils.capture import capture_output
from test_bad_input import BAD_CONFIG

from kimi_magic import SettingError, Settings
from kimi_magic.core.models import RETIRED_EXAMPLES
from kimi_magic.core.settings import DEFAULT_SYSTEM, SETTINGS


def chats(sim) -> list[dict]:
    return [r["body"] for r in sim.requests if r["path"].endswith("/chat/completions")]


def sent_system(sim) -> str | None:
    first = chats(sim)[-1]["messages"][0]
    return first["content"] if first["role"] == "system" else None


def run(shell, cell: str):
    with capture_output() as out:
        result = shell.run_cell(cell)
    assert result.success, result.error_in_exec
    return out.stdout


def magic(shell):
    return shell.magics_manager.registry["KimiMagic"]


def test_system_option_sets_that_sessions_prompt_only(ipython, sim):
    out = run(ipython, "%%kimi -s terse --system Terse.\nHello")
    assert "System prompt of session 'terse' set; other sessions keep theirs." in out
    assert sent_system(sim) == "Terse."
    assert repr(DEFAULT_SYSTEM) in run(ipython, "%config KimiMagic.system")
    assert magic(ipython).sessions.settings.system == DEFAULT_SYSTEM

    run(ipython, "%%kimi -s other\nHello")
    assert sent_system(sim) == DEFAULT_SYSTEM, "a session opened later starts from the default"

    run(ipython, "%%kimi -s terse\nAgain")
    assert sent_system(sim) == "Terse.", "the session keeps its own prompt"
    assert "set;" not in run(ipython, "%%kimi -s terse --system Terse.\nSame prompt")


def test_a_resumed_session_keeps_its_prompt_and_new_ones_take_the_default(ipython, sim):
    run(ipython, "%%kimi -s terse --system Terse.\nHello")
    run(ipython, "%%kimi -s plain\nHello")
    run(ipython, "%reload_ext kimi_magic")  # a new kernel on the same store
    run(ipython, '%config KimiMagic.system = "Answer in French."')

    run(ipython, "%%kimi -s terse\nAgain")
    assert sent_system(sim) == "Terse."
    run(ipython, "%%kimi -s plain\nAgain")
    assert sent_system(sim) == DEFAULT_SYSTEM, "an existing session keeps its prompt"
    run(ipython, "%%kimi -s fresh\nHello")
    assert sent_system(sim) == "Answer in French."
    assert magic(ipython).sessions.settings.system == "Answer in French."


def test_default_system_reaches_open_sessions_that_have_not_started(ipython, sim):
    run(ipython, "%kimi status")  # opens the default session before it is configured
    run(ipython, "%%kimi -s started\nHello")
    run(ipython, "%%kimi -s own --system Own.\nHello")
    out = run(ipython, '%config KimiMagic.system = "Be brief."')
    assert "'started' already started and keep theirs" in out and "'own'" not in out

    run(ipython, "%%kimi -s default\nHello")
    assert sent_system(sim) == "Be brief."
    run(ipython, "%%kimi -s started\nAgain")
    assert sent_system(sim) == DEFAULT_SYSTEM
    run(ipython, "%%kimi -s own\nAgain")
    assert sent_system(sim) == "Own."


def test_a_bad_environment_variable_does_not_stop_the_extension(ipython, sim, monkeypatch):
    monkeypatch.setenv("MOONSHOT_MODEL", RETIRED_EXAMPLES[0])
    with pytest.warns(UserWarning, match=r"ignoring \$MOONSHOT_MODEL: model .* is retired"):
        run(ipython, "%reload_ext kimi_magic")
    assert magic(ipython).model == "kimi-k2.6"
    run(ipython, "%%kimi\nHello")
    assert chats(sim)[-1]["model"] == "kimi-k2.6"


def test_auto_is_a_model_setting(ipython, sim):
    run(ipython, '%config KimiMagic.model = "auto"')
    assert magic(ipython).sessions.settings.model == "auto"
    run(ipython, "%%kimi\nHello")
    assert chats(sim)[-1]["model"] == "kimi-k2.6", "auto picks the cheapest model that fits"


def test_preset_none_restores_what_the_preset_changed(ipython, sim):
    run(ipython, "%config KimiMagic.compact_at = 0.5")
    run(ipython, '%config KimiMagic.preset = "economy"')
    settings = magic(ipython).sessions.settings
    assert (settings.compact_at, settings.keep_rounds, settings.cache_ttl) == (32_000, 2, "1h")
    run(ipython, "%config KimiMagic.verbatim_budget = 100")  # not the preset's: stays
    run(ipython, "%config KimiMagic.keep_rounds = 4")  # changed after the preset: stays

    run(ipython, "%config KimiMagic.preset = None")
    assert (settings.compact_mode, settings.compact_at, settings.keep_rounds,
            settings.cache_ttl, settings.verbatim_budget) == ("compress", 0.5, 4, None, 100)
    assert (magic(ipython).compact_at, magic(ipython).cache_ttl) == (0.5, None)
    run(ipython, "%%kimi\nHello")
    assert "prompt_cache_options" not in chats(sim)[-1], "the 1-hour cache is no longer asked"


#: The bad values of test_bad_input, as plain Python passes them (the notebook's own
#: settings — preset, store_path, auto_widget — are not ``Settings`` fields).
PLAIN_BAD = [(name, ast.literal_eval(value)) for name, value in BAD_CONFIG
             if name in {s.name for s in SETTINGS}]


@pytest.mark.parametrize("name, value", PLAIN_BAD)
def test_plain_settings_refuse_what_config_refuses(name, value):
    with pytest.raises(SettingError, match=name) as refused:
        Settings(**{name: value})
    assert "\n" not in str(refused.value)
    settings = Settings()
    old = getattr(settings, name)
    with pytest.raises(SettingError, match=name):
        setattr(settings, name, value)
    assert getattr(settings, name) == old


def test_plain_settings_keep_their_constructors(monkeypatch):
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-plain-0123")
    monkeypatch.setenv("MOONSHOT_MODEL", "kimi-k3")
    s = Settings.from_env(keep_rounds=5)
    assert (s.api_key, s.model, s.keep_rounds) == ("sk-plain-0123", "kimi-k3", 5)
    assert "sk-plain-0123" not in repr(s) and "api_key" not in s.public()
    economy = Settings.from_preset("economy", keep_rounds=1)
    assert (economy.compact_at, economy.cache_ttl, economy.keep_rounds) == (32_000, "1h", 1)
    assert Settings(model="auto", max_completion_tokens=None, think=False).model == "auto"
    with pytest.raises(SettingError, match="no preset 'lavish'"):
        Settings.from_preset("lavish")
    with pytest.raises(AttributeError, match="no setting 'compact_mod'"):
        s.compact_mod = "off"  # a typo is not silently a new attribute


def test_a_bad_value_in_the_environment_is_named(monkeypatch):
    monkeypatch.setenv("MOONSHOT_BASE_URL", "api.moonshot.ai")
    with pytest.raises(SettingError, match="base_url must start with http"):
        Settings.from_env()
