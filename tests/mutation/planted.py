#!/usr/bin/env python3
"""Plant known bugs in the agent, one at a time, and check that the tests meant to catch each
one go red (the catalogue: bugs that once went through unnoticed, and a planted bug for each
behaviour a test was written to guard).

Every bug is a text replacement in fence_xenapi.py of a scratch copy of the checkout (the
checkout itself is never touched), followed by the named tests with `-x`. A bug whose text no
longer occurs in the agent is reported STALE: the agent changed, so rewrite the planting (the
test it names must still exist and still guard the rule).

    .venv/bin/python tests/mutation/planted.py            # every bug
    .venv/bin/python tests/mutation/planted.py NAME...    # some of them
    .venv/bin/python tests/mutation/planted.py --list

Exit status 0 when every bug was caught (stale ones are listed but do not fail the run)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script

from tests.mutation.sandbox import ROOT, scratch_copy


@dataclass(frozen=True)
class Bug:
    name: str
    what: str
    old: str
    new: str
    tests: tuple[str, ...]


BUGS = (
    Bug("reboot-ignores-failed-off",
        "reboot goes on (and prints Success) when its power-off failed",
        "    for vm in vms:\n        power.power_off(vm)\n",
        "    for vm in vms:\n        with contextlib.suppress(FenceError):\n"
        "            power.power_off(vm)\n",
        ("tests/test_agent_failures.py::test_reboot_whose_power_off_fails_is_not_fenced",)),
    Bug("uuid-plug-not-cross-checked",
        "uuid wins over a plug naming another VM, silently",
        "return [Target(plug) for plug in self.plugs] if self.uuid else []",
        "return []",
        ("tests/test_agent_resolution.py::test_uuid_and_a_plug_naming_another_vm_are_refused",)),
    Bug("uuid-matches-names",
        "uuid= also matches a VM whose name is that UUID",
        "return [Target(self.uuid, uuid_only=True)]",
        "return [Target(self.uuid)]",
        ("tests/test_agent_resolution.py::test_uuid_parameter_matches_uuids_only",)),
    Bug("delay-after-fencing",
        "delay is waited after the action instead of before",
        "        time.sleep(opts.delay)\n",
        "        import atexit\n        atexit.register(time.sleep, opts.delay)\n",
        ("tests/test_agent_timing.py::test_delay_is_waited_before_the_power_off",)),
    Bug("delay-ignored-for-reboot",
        "delay is applied to off only",
        'if opts.action in ("off", "reboot") and opts.delay > 0:',
        'if opts.action in ("off",) and opts.delay > 0:',
        ("tests/test_agent_timing.py::test_delay_is_waited_before_the_power_off",)),
    Bug("delay-for-every-action",
        "delay is waited before status and monitor too (mutation survivor)",
        'if opts.action in ("off", "reboot") and opts.delay > 0:',
        'if opts.action in ("off", "reboot") or opts.delay > 0:',
        ("tests/test_agent_timing.py::test_delay_is_for_off_and_reboot_only",)),
    Bug("power-wait-ignored",
        "power_wait is never waited",
        "power_wait=number(\"power_wait\", float),",
        "power_wait=0 * number(\"power_wait\", float),",
        ("tests/test_agent_timing.py::test_power_wait_is_waited_after_the_power_operation",)),
    Bug("shell-timeout-not-for-queries",
        "queries after login get login_timeout instead of shell_timeout",
        "timeouts = Timeouts(login=opts.login_timeout, query=opts.shell_timeout)",
        "timeouts = Timeouts(login=opts.login_timeout, query=opts.login_timeout)",
        ("tests/test_agent_timing.py::test_shell_timeout_bounds_each_query_after_login",)),
    Bug("login-timeout-per-host",
        "login_timeout is given to each pool host again instead of bounding the whole login",
        '        bound = Deadline(self._timeouts.login, "login")\n',
        '        bound = Deadline(self._timeouts.login * len(self._endpoints), "login")\n',
        ("tests/test_agent_timing.py::test_login_timeout_bounds_the_whole_login",)),
    Bug("login-race-sequential",
        "the session_url hosts are tried one after another (a hung host costs login_timeout)",
        "LOGIN_STAGGER = 0.25\n",
        "LOGIN_STAGGER = 30.0\n",
        ("tests/test_degraded.py::test_reboot_through_hung_hosts_listed_before_the_master",
         "tests/test_degraded.py::test_reboot_through_hung_and_refusing_hosts",
         "tests/test_degraded.py::test_dead_name_server_does_not_hold_back_a_later_address")),
    Bug("login-race-all-at-once",
        "every session_url host is asked at once, not the first one first (requests grow)",
        "LOGIN_STAGGER = 0.25\n",
        "LOGIN_STAGGER = 0.0\n",
        ("tests/test_degraded.py::test_budgets_hold_on_a_pool",)),
    Bug("login-race-same-address-twice",
        "a host listed under two names gets the password twice (two refused logins)",
        "or address in self._addresses:",
        "or address is None:",
        ("tests/test_degraded.py::"
         "test_wrong_password_with_hung_members_ahead_is_one_refused_login",)),
    Bug("login-race-late-session-leaks",
        "a session a late answer brings is dropped, not logged out",
        "        if isinstance(outcome, _Session):\n            attempt.log_out(outcome)",
        "        if False:\n            attempt.log_out(outcome)",
        ("tests/test_degraded.py::"
         "test_late_session_from_a_second_address_of_the_master_is_logged_out",)),
    Bug("login-race-sent-password-not-awaited",
        "attempts that sent the password are cut at once on SIGTERM or at the end (their "
        "sessions leak)",
        "            self._await_answers(wait)\n",
        "            pass\n",
        ("tests/test_degraded.py::"
         "test_sigterm_while_the_master_answers_slowly_leaves_no_session",
         "tests/test_degraded.py::"
         "test_late_session_from_a_second_address_of_the_master_is_logged_out")),
    Bug("pin-not-checked",
        "a certificate matching no ssl_fingerprint is accepted: the password goes to it",
        "                self.tls.check_pin(der, self.endpoint)\n",
        "                pass\n",
        ("tests/test_degraded.py::test_race_sends_the_password_only_past_the_pin_check",)),
    Bug("login-race-threads-not-cut",
        "attempts still waiting when the session closes are not cut off (threads outlive it)",
        "                if not attempt.answered:\n                    attempt.channel.abort()",
        "                if False:\n                    attempt.channel.abort()",
        ("tests/test_degraded.py::test_login_race_leaves_no_thread_behind",)),
    Bug("busy-vm-not-retried",
        "OTHER_OPERATION_IN_PROGRESS fails the power-off instead of being waited out",
        'if failure.code == "OTHER_OPERATION_IN_PROGRESS":',
        'if failure.code == "OTHER_OPERATION_IN_PROGRESS" and wanted == "Running":',
        ("tests/test_agent_failures.py::test_busy_vm_is_retried_until_it_powers_off",)),
    Bug("busy-vm-not-started-again",
        "OTHER_OPERATION_IN_PROGRESS from VM.start fails the on (or leaves a reboot's VM off) "
        "instead of being waited out",
        'if failure.code == "OTHER_OPERATION_IN_PROGRESS":',
        'if failure.code == "OTHER_OPERATION_IN_PROGRESS" and wanted == "Halted":',
        ("tests/test_agent_failures.py::test_busy_vm_is_started_once_it_is_free",
         "tests/test_agent_failures.py::test_vm_started_by_someone_else_meanwhile_is_on",
         "tests/test_degraded.py::"
         "test_real_database_server_powered_on_while_a_start_delay_runs")),
    Bug("busy-reason-not-said",
        "a start refused as busy until power_timeout fails without saying why",
        '            message += f"; another operation is still in progress on it ({self._busy})"\n',
        "            pass\n",
        ("tests/test_agent_failures.py::"
         "test_busy_vm_that_stays_busy_fails_to_start_within_power_timeout",)),
    Bug("names-compared-exactly",
        "VM names compared exactly: `web` fences `web` beside `web `, ` db` has no name",
        "else [vm for vm in candidates if same_name(target.text, vm.name)])",
        "else [vm for vm in candidates if target.text == vm.name])",
        ("tests/test_agent_resolution.py::"
         "test_names_differing_by_surrounding_whitespace_are_ambiguous",
         "tests/test_agent_resolution.py::test_name_with_surrounding_whitespace_alone_is_fenced")),
    Bug("names-stripped-on-one-side",
        "the pool's VM names are compared unstripped",
        "    return given.strip() == name.strip()\n",
        "    return given.strip() == name\n",
        ("tests/test_agent_resolution.py::test_name_with_surrounding_whitespace_alone_is_fenced",)),
    Bug("names-not-scanned",
        "only exact names are asked for: a name differing by whitespace is never seen",
        """        clauses.append('field "is_a_template"="false"')\n""",
        "        pass\n",
        ("tests/test_agent_resolution.py::test_name_with_surrounding_whitespace_alone_is_fenced",
         "tests/test_agent_resolution.py::"
         "test_names_differing_by_surrounding_whitespace_are_ambiguous")),
    Bug("value-quoted-whole",
        "an error quotes a stdin value past its first line (a bare \\r file: the password)",
        "    lines = text.splitlines()\n    first = lines[0] if lines else \"\"\n",
        "    lines = [text]\n    first = lines[0] if lines else \"\"\n",
        ("tests/test_units.py::test_shown_value_is_the_first_line_only",)),
    Bug("other-lines-not-scrubbed",
        "the lines a stdin value swallowed are not scrubbed (debug lines show the password)",
        "        for other in value.splitlines()[1:]:\n",
        "        for other in value.splitlines()[1:0]:\n",
        ("tests/test_agent_security.py::"
         "test_a_value_holding_other_lines_never_shows_the_password",)),
    Bug("password-scrubbed-late",
        "the password becomes a secret only after every option was checked",
        '    SCRUBBER.add(values.get("password"))\n',
        "",
        ("tests/test_agent_security.py::"
         "test_the_password_pasted_into_another_parameter_is_not_shown",)),
    Bug("session-url-query-refused",
        "a session_url with a query is refused (XAPI serves it)",
        'if not re.fullmatch(r"(\\?[!-~]*)?", query):',
        "if query:",
        ("tests/test_agent_failures.py::test_session_url_with_a_query_and_a_fragment",
         "tests/test_units.py::test_endpoints")),
    Bug("session-url-fragment-sent",
        "a session_url's fragment is sent as part of the request path",
        '        query = (query or "").partition("#")[0]\n',
        '        query = query or ""\n',
        ("tests/test_units.py::test_endpoints",
         "tests/test_agent_failures.py::test_session_url_with_a_query_and_a_fragment")),
    Bug("scrubber-disabled",
        "secrets are no longer scrubbed from messages",
        "        for secret in sorted(self._secrets, key=len, reverse=True):\n",
        "        for secret in sorted(self._secrets, key=len, reverse=True)[:0]:\n",
        ("tests/test_agent_security.py::test_session_invalid_leaks_nothing",)),
    Bug("one-url-reported-of-many",
        "with several pool hosts failing, the error names only the first (mutation survivor)",
        "if len(problems) == 1:",
        "if len(problems) != 1:",
        ("tests/test_agent_failures.py::test_every_url_that_failed_is_named",)),
    Bug("verbose-alone-is-silent",
        "verbose=1 without verbose_level logs nothing (mutation survivor)",
        "            verbose_level = 1\n",
        "            verbose_level = 0\n",
        ("tests/test_units.py::test_verbose_level",)),
    Bug("quotes-stripped-badly",
        "a quoted stdin value loses a character (mutation survivor)",
        "value = value[1:-1]",
        "value = value[2:-1]",
        ("tests/test_units.py::test_stdin_strips_one_pair_of_surrounding_double_quotes",)),
    Bug("no-polling-for-the-state",
        "the first state read that is not yet Halted fails the power-off (mutation survivor)",
        "            if deadline.remaining() <= self._opts.stonith_status_sleep:\n",
        "            if True:\n",
        ("tests/test_agent_failures.py::test_vm_that_halts_after_the_call_returned_is_awaited",)),
    Bug("logout-without-time",
        "with shell_timeout=0 the logout gets no time either (mutation survivor)",
        "min(LOGOUT_TIMEOUT, max(self._timeouts.query, 0.5))",
        "min(LOGOUT_TIMEOUT, self._timeouts.query)",
        ("tests/test_agent_timing.py::test_shell_timeout_zero_still_logs_out",)),
    Bug("refusal-without-host",
        "a refused login does not say which host refused (mutation survivor)",
        "if failure.code in CREDENTIAL_REFUSALS:",
        "if failure.code in ():",
        ("tests/test_agent_failures.py::test_wrong_password",)),
    Bug("uuid-ambiguous-with-a-template",
        "a template (or the VM itself) named like a UUID makes that UUID ambiguous "
        "(mutation survivor)",
        "if vm.forbidden_kind is None and vm.ref != chosen.ref]",
        "if vm.forbidden_kind is None or vm.ref != chosen.ref]",
        ("tests/test_units.py::"
         "test_pick_by_uuid_ignores_templates_and_itself_named_like_the_uuid",)),
    Bug("password-script-timeout-not-caught",
        "a hanging password_script ends in an internal error (mutation survivor)",
        "        except subprocess.TimeoutExpired:\n"
        '            raise TimedOut("password_script did not finish in time")',
        "        except ZeroDivisionError:\n"
        '            raise TimedOut("password_script did not finish in time")',
        ("tests/test_agent_security.py::test_password_script_that_hangs_is_one_line",)),
    Bug("password-script-failure-is-fatal",
        "a password_script that exits non-zero stops the run (fence-agents only warns and uses "
        "what it printed)",
        '            log.warning("password_script exited with status %d; using what it printed",\n'
        '                        done.returncode)',
        '            raise FenceError(f"password_script exited with status {done.returncode}")',
        ("tests/test_agent_security.py::"
         "test_password_script_that_fails_warns_and_its_output_is_used",)),
    Bug("password-script-failure-silent",
        "a password_script that exits non-zero is used without a warning",
        '            log.warning("password_script exited with status %d; using what it printed",\n'
        '                        done.returncode)',
        "            pass",
        ("tests/test_agent_security.py::"
         "test_password_script_that_fails_warns_and_its_output_is_used",)),
    Bug("stdin-line-without-equals-ignored",
        "a stdin line without '=' is skipped, not set to the empty value as in fence-agents",
        '        key, _, value = line.partition("=")\n',
        '        key, _, value = line.partition("=")\n        if not _:\n            continue\n',
        ("tests/test_units.py::test_stdin_warnings_name_what_was_ignored",)),
    Bug("stdin-unknown-name-not-warned",
        "an unknown stdin parameter is ignored without a warning",
        "            warnings.append(f\"ignoring unknown parameter '{shown_value(key)}'\")\n",
        "            pass\n",
        ("tests/test_units.py::test_stdin_warnings_name_what_was_ignored",)),
    Bug("start-not-forced",
        "VM.start without force: XAPI's pre-boot memory check refuses a nested-virt VM "
        "(mutation survivor)",
        'method, args = "VM.start", (False, True)',
        'method, args = "VM.start", (False, False)',
        ("tests/test_agent_actions.py::test_start_is_forced_past_pre_boot_checks",)),
    Bug("first-read-capped-by-power-timeout",
        "the first state read after a power call shares the call's expired deadline "
        "(mutation survivor)",
        "poll = None if first else deadline.capped(self._opts.shell_timeout)",
        "poll = deadline.capped(self._opts.shell_timeout)",
        ("tests/test_degraded.py::test_a_call_that_used_up_power_timeout_still_gets_one_read",)),
    Bug("blocked-reason-hidden",
        "OPERATION_BLOCKED's reason is not shown (mutation survivor)",
        '                reason = f" ({failure.params[1]})" if len(failure.params) > 1 else ""\n'
        "                raise FenceError(\n                    f\"cannot {op}",
        '                reason = f" ({failure.params[1]})" if len(failure.params) > 2 else ""\n'
        "                raise FenceError(\n                    f\"cannot {op}",
        ("tests/test_degraded.py::test_blocked_operation_is_a_clear_line",)),
    Bug("blocked-without-reason-crashes",
        "OPERATION_BLOCKED without a reason is an internal error (mutation survivor)",
        '                reason = f" ({failure.params[1]})" if len(failure.params) > 1 else ""\n'
        "                raise FenceError(\n                    f\"cannot {op}",
        '                reason = f" ({failure.params[1]})" if len(failure.params) >= 1 else ""\n'
        "                raise FenceError(\n                    f\"cannot {op}",
        ("tests/test_degraded.py::test_blocked_operation_without_a_reason_is_a_clear_line",)),
    Bug("unreachable-host-misdescribed",
        "a host XAPI cannot contact is described as a shutdown that did not complete "
        "(mutation survivor)",
        'said = ("XAPI cannot contact it (CANNOT_CONTACT_HOST)" if self._unreachable',
        'said = ("XAPI cannot contact it (CANNOT_CONTACT_HOST)" if not self._unreachable',
        ("tests/test_degraded.py::test_unreachable_host_still_marked_live",
         "tests/test_degraded.py::test_shutdown_that_needs_longer_than_power_timeout")),
    Bug("retry-on-zero-warns",
        "reboot with retry_on=0 tries zero power-ons and warns that the VM did not power on "
        "(mutation survivor)",
        "if opts.retry_on == 0:",
        "if opts.retry_on == -1:",
        ("tests/test_agent_compat.py::test_reboot_with_retry_on_zero_leaves_the_vm_off",)),
    Bug("password-script-not-utf8-crashes",
        "a password_script printing other than UTF-8 is an internal error (mutation survivor)",
        "        except UnicodeDecodeError:\n"
        '            raise FenceError("password_script printed',
        "        except ZeroDivisionError:\n"
        '            raise FenceError("password_script printed',
        ("tests/test_agent_security.py::"
         "test_password_script_printing_other_than_utf8_is_one_line",)),
    Bug("password-script-six-seconds",
        "a password_script gets 6 s instead of max(login_timeout, 5 s) (mutation survivor)",
        "timeout=max(self.login_timeout, 5.0)",
        "timeout=max(self.login_timeout, 6.0)",
        ("tests/test_agent_security.py::test_password_script_gets_five_seconds_not_more",)),
    Bug("host-liveness-inverted-type-check",
        "host liveness read from anything but a boolean: a reset never allowed",
        "live = value if isinstance(value, bool) else None",
        "live = value if not isinstance(value, bool) else None",
        ("tests/test_degraded.py::test_dead_host_with_ha_is_reset_and_verified",)),
    Bug("no-thumbprint-from-a-verified-member",
        "a verified member's HOST_IS_SLAVE without a thumbprint (XAPI before December 2023) "
        "is taken as one (mutation survivor)",
        "if not thumbprint or not member.verified:",
        "if not thumbprint and not member.verified:",
        ("tests/test_degraded.py::test_pool_without_thumbprints_checks_the_master_by_the_pins",)),
    Bug("relogin-expiry-not-reported",
        "a new login that power_timeout ended does not say so (mutation survivor)",
        "        if self.deadline.remaining() <= 0:\n"
        "            problems.append(",
        "        if self.deadline.remaining() <= -1:\n"
        "            problems.append(",
        ("tests/test_degraded.py::test_master_hangs_while_polling_and_no_listed_host_answers",)),
    Bug("spent-poll-slice-kept-after-relogin",
        "after a quick new login the read is repeated on its spent slice and fails "
        "(mutation survivor)",
        "if deadline is not None and deadline is not relogin and deadline.remaining() <= 0:",
        "if deadline is not None and deadline is not relogin and deadline.remaining() <= -1:",
        ("tests/test_degraded.py::"
         "test_master_hangs_while_polling_and_the_next_host_answers_at_once",)),
    Bug("login-cap-silent",
        "session_url hosts left untried at MAX_LOGIN_HOSTS without a word (mutation survivor)",
        "        if self._capped:\n",
        "        if False:\n",
        ("tests/test_degraded.py::test_login_tries_at_most_eight_hosts",)),
    Bug("relogin-tried-after-power-timeout",
        "a read that hung until power_timeout ended leads to a login that cannot finish "
        "(mutation survivor)",
        "if not reconnect or (relogin is not None and relogin.remaining() <= 0):",
        "if not reconnect or (relogin is not None and relogin.remaining() <= -1):",
        ("tests/test_degraded.py::test_master_hangs_on_the_last_read_fails_on_that_read",)),
    Bug("slow-shutdown-sent-again",
        "a shutdown still running is taken as lost and sent again at every read "
        "(mutation survivor)",
        "if self._session.logins != issued_at and outcome in (DONE, PENDING):",
        "if self._session.logins == issued_at and outcome in (DONE, PENDING):",
        ("tests/test_degraded.py::test_a_slow_shutdown_is_awaited_not_sent_again",)),
    Bug("second-attempt-trusts-the-old-state",
        "the second power-on attempt does not read the state again and sends a second start "
        "(mutation survivor)",
        "                if attempt > 1:\n",
        "                if attempt > 2:\n",
        ("tests/test_agent_failures.py::"
         "test_retry_on_reads_the_state_again_before_starting_again",)),
    Bug("every-slow-start-in-doubt",
        "any start not yet Running is taken as one a lost master may still carry out: no retry "
        "(mutation survivor)",
        'if outcome == LOST and wanted == "Running":',
        'if outcome == LOST or wanted == "Running":',
        ("tests/test_degraded.py::test_a_slow_start_with_retry_on_fails_as_a_timeout",)),
    Bug("host-facts-failure-replaces-the-verdict",
        "a failed host.get_record replaces the stuck line (mutation survivor)",
        "        except FenceError as error:\n            log.info(\"cannot read host",
        "        except ZeroDivisionError as error:\n            log.info(\"cannot read host",
        ("tests/test_degraded.py::test_stuck_line_without_host_facts",)),
    Bug("sleep-past-the-deadline",
        "power_wait with the deadline already spent sleeps a negative time: internal error "
        "(mutation survivor)",
        "time.sleep(max(0.0, min(seconds, self.remaining())))",
        "time.sleep(max(-1.0, min(seconds, self.remaining())))",
        ("tests/test_degraded.py::test_a_call_that_used_up_power_timeout_still_gets_one_read",)),
    Bug("ca-file-read-late",
        "a non-PEM ssl_ca_file is found only at the first connection (mutation survivor)",
        "if self.ssl_ca_file and not self.ssl_insecure and not self.ssl_fingerprints:",
        "if self.ssl_ca_file and not self.ssl_insecure and self.ssl_fingerprints:",
        ("tests/test_units.py::test_check_refuses_unusable_runs",)),
    Bug("credentials-not-checked-for-xml",
        "a username or password XML-RPC cannot carry is sent anyway (mutation survivor)",
        'for name in ("username", "password"):',
        "for name in ():",
        ("tests/test_units.py::test_check_refuses_unusable_runs",)),
    Bug("target-text-mislabelled",
        "a plug XML-RPC cannot carry is reported as a uuid (mutation survivor)",
        '"plug" if not target.uuid_only else "uuid"',
        '"plug" if target.uuid_only else "uuid"',
        ("tests/test_units.py::test_check_refuses_unusable_runs",)),
    Bug("uuid-target-not-called-uuid",
        "an unknown uuid= is reported like a name (mutation survivor)",
        "return f\"uuid '{text}'\" if self.uuid_only else",
        "return f\"uuid '{text}'\" if not self.uuid_only else",
        ("tests/test_agent_resolution.py::test_uuid_parameter_matches_uuids_only",)),
    Bug("refusal-reason-hidden",
        "XAPI's reason for refusing the login is not shown (mutation survivor)",
        'reason = f" ({failure.params[1]})" if len(failure.params) > 1 else ""\n'
        "            raise LoginRefused(",
        'reason = f" ({failure.params[1]})" if len(failure.params) > 2 else ""\n'
        "            raise LoginRefused(",
        ("tests/test_agent_failures.py::test_wrong_password",)),
    Bug("refusal-without-reason-crashes",
        "a login refusal without a reason is an internal error (mutation survivor)",
        'reason = f" ({failure.params[1]})" if len(failure.params) > 1 else ""\n'
        "            raise LoginRefused(",
        'reason = f" ({failure.params[1]})" if len(failure.params) >= 1 else ""\n'
        "            raise LoginRefused(",
        ("tests/test_agent_failures.py::test_refusal_without_a_reason_is_one_line",)),
    Bug("any-login-failure-followed-as-a-redirect",
        "a login failure with a parameter is followed like HOST_IS_SLAVE (mutation survivor)",
        'if failure.code == "HOST_IS_SLAVE" and failure.params:',
        'if failure.code == "HOST_IS_SLAVE" or failure.params:',
        ("tests/test_agent_failures.py::test_login_failure_that_names_no_master_is_not_followed",)),
    Bug("one-login-problem-phrased-as-many",
        "one host's login failure reported as 'any pool host' (mutation survivor)",
        "if len(problems) == 1:",
        "if len(problems) == 0:",
        ("tests/test_agent_failures.py::test_login_failure_that_names_no_master_is_not_followed",)),
    Bug("redirect-blames-the-start-of-the-chain",
        "the host that redirected to an already tried one is misnamed (mutation survivor)",
        "{chain[-1]} redirects to",
        "{chain[0]} redirects to",
        ("tests/test_degraded.py::test_redirect_to_a_host_already_tried_is_named",)),
    Bug("call-arguments-shown-at-verbose-1",
        "call arguments are logged at -v instead of -vv (mutation survivor)",
        'if self._verbose_level >= 2 else "…"',
        'if self._verbose_level >= 1 else "…"',
        ("tests/test_agent_interface.py::"
         "test_verbose_level_2_shows_the_arguments_never_the_session",)),
    Bug("login-duration-wrong",
        "the login's logged duration is nonsense (mutation survivor)",
        "self.endpoint, time.monotonic() - started)",
        "self.endpoint, time.monotonic() + started)",
        ("tests/test_agent_interface.py::"
         "test_verbose_level_2_shows_the_arguments_never_the_session",)),
    Bug("login-without-session-accepted",
        "a login answer that is an empty string is taken as a session (mutation survivor)",
        "if not isinstance(session, str) or not session:",
        "if not isinstance(session, str) and not session:",
        ("tests/test_agent_failures.py::test_login_answer_without_a_session_is_one_line",)),
    Bug("logout-failure-undoes-the-fence",
        "a logout that times out after a verified fence turns it into a failure "
        "(mutation survivor)",
        "                except FenceError as error:\n"
        '                    log.warning("logout failed',
        "                except ZeroDivisionError as error:\n"
        '                    log.warning("logout failed',
        ("tests/test_agent_failures.py::"
         "test_logout_that_hangs_after_a_verified_fence_is_a_warning",)),
    Bug("malformed-thumbprint-fatal",
        "a malformed master thumbprint from a member stops the login (mutation survivor)",
        "    except UsageError:\n        log.warning(\"%s sent a malformed",
        "    except ZeroDivisionError:\n        log.warning(\"%s sent a malformed",
        ("tests/test_degraded.py::"
         "test_malformed_thumbprint_is_a_warning_and_the_pins_decide",)),
    Bug("call-duration-wrong",
        "each call's logged duration is nonsense (mutation survivor)",
        "            log.debug(\"XAPI %s(%s): %s in %.3f s\", method, shown, outcome,\n"
        "                      time.monotonic() - started)",
        "            log.debug(\"XAPI %s(%s): %s in %.3f s\", method, shown, outcome,\n"
        "                      time.monotonic() + started)",
        ("tests/test_agent_interface.py::"
         "test_verbose_level_2_shows_the_arguments_never_the_session",)),
    Bug("redirect-blames-the-second-host-of-the-chain",
        "the host that redirected to an already tried one is misnamed in a chain of three "
        "(mutation survivor)",
        "{chain[-1]} redirects to",
        "{chain[1]} redirects to",
        ("tests/test_degraded.py::test_redirect_chain_of_three_back_to_a_tried_host",)),
    Bug("deadline-ends-a-second-early",
        "every deadline gives up when less than a second is left (mutation survivor)",
        "        if left <= 0:\n            raise self.expired()",
        "        if left <= 1:\n            raise self.expired()",
        ("tests/test_agent_timing.py::test_a_short_login_timeout_the_pool_meets_is_enough",)),
    Bug("scanner-forgets-deadline-after-lt-name",
        "after a member name holding '<' the record-map scanner stops checking its deadline "
        "(it once compared the clock with a buffer offset there)",
        "                position = after\n",
        "                position = after\n                deadline = None\n",
        ("tests/test_units.py::test_scanner_keeps_its_deadline_after_a_member_name_holding_lt",)),
    Bug("capped-deadline-on-another-clock",
        "a capped deadline reads the system clock instead of its parent's",
        "Deadline(cap, self.what, self.clock)",
        "Deadline(cap, self.what)",
        ("tests/test_units.py::test_deadline_counts_on_its_clock_and_caps_on_the_same_one",)),
    Bug("whole-answer-dtd-read",
        "a whole answer's DTD and entity declarations are read (billion laughs)",
        '    parser.StartDoctypeDeclHandler = refuse("a DOCTYPE")\n'
        '    parser.EntityDeclHandler = refuse("an entity declaration")\n',
        "",
        ("tests/test_units.py::test_whole_answers_refuse_dtds_and_entities",)),
    Bug("member-names-not-escaped",
        "XAPI's raw struct member names go to expat unescaped (a key with '<' or '&' breaks "
        "the answer)",
        "parser.Parse(_escape_member_names(body, deadline), True)",
        "parser.Parse(body, True)",
        ("tests/test_fuzz.py::test_the_decoder_reads_xapis_unescaped_member_names",)),
    Bug("whole-answer-no-deadline",
        "reading a whole answer never checks the deadline (8 MiB of tiny values)",
        "        if not self.elements & 0xFFF and self.deadline is not None:\n"
        "            self.deadline.check()\n",
        "",
        ("tests/test_hostile.py::test_reading_an_answer_is_under_the_deadline_too",)),
    Bug("host-name-not-checked",
        "a CA-verified certificate is accepted for any host name (the chain alone is checked)",
        "                context = ssl.create_default_context(cafile=self.ca_file)\n",
        "                context = ssl.create_default_context(cafile=self.ca_file)\n"
        "                context.check_hostname = False\n",
        ("tests/test_degraded.py::test_ca_signed_certificate_for_another_name_is_refused",)),
    Bug("reset-with-liveness-unknown",
        "VM.power_state_reset also when the agent could not read the host's liveness",
        "if host.live is not False:",
        "if host.live is True:",
        ("tests/test_degraded.py::test_reset_with_liveness_unknown_is_refused",)),
    Bug("status-off-while-one-plug-runs",
        "status of several plugs answers OFF (exit 2) unless every one of them runs",
        "on = any(vm.is_on for vm in vms)",
        "on = all(vm.is_on for vm in vms)",
        ("tests/test_agent_resolution.py::test_status_of_several_plugs_is_on_while_one_runs",)),
    Bug("reset-with-ha-unknown",
        "a pool record whose ha_enabled is missing or not a boolean counts as HA enabled",
        'return any(record.get("ha_enabled") is True for record in pools.values())',
        'return any(record.get("ha_enabled") is not False for record in pools.values())',
        ("tests/test_degraded.py::test_reset_with_ha_unknown_needs_the_without_ha_opt_in",)),
    Bug("thumbprint-of-an-unverified-member-pins",
        "a member reached without verification (ssl_insecure) pins the master by its "
        "thumbprint header",
        "if not thumbprint or not member.verified:",
        "if not thumbprint:",
        ("tests/test_degraded.py::test_thumbprint_of_an_unverified_member_binds_nothing",)),
    Bug("http-status-not-checked",
        "an answer with an HTTP status other than 200 is read as XAPI's (its status unsaid)",
        "        if status != 200:\n            raise ConnectionFailure(",
        "        if False:\n            raise ConnectionFailure(",
        ("tests/test_agent_failures.py::test_a_login_answer_that_is_not_http_200_is_refused",)),
    Bug("ipv6-zone-unchecked",
        "an IPv6 address whose zone holds control or non-ASCII characters is accepted",
        "        if not host.isascii() or not host.isprintable():\n",
        "        if False:\n",
        ("tests/test_units.py::test_endpoint_refuses_what_cannot_be_reached",)),
    Bug("list-trusts-the-pool-filter",
        "list shows whatever the pool's filter let through (a snapshot not marked template)",
        "    return sorted((vm for vm in vms if vm.forbidden_kind is None),",
        "    return sorted((vm for vm in vms),",
        ("tests/test_agent_failures.py::"
         "test_list_shows_real_vms_only_whatever_the_pool_filters",)),
    Bug("connect-goes-on-past-a-connection",
        "a name's next address is tried even after a connection was made (mutation survivor)",
        "                    sock.connect(address)\n                    break\n",
        "                    sock.connect(address)\n                    continue\n",
        ("tests/test_degraded.py::test_a_name_with_two_addresses_uses_the_one_that_answers",)),
    Bug("refused-connection-taken-as-sent",
        "a refused connection counts as a request XAPI may have received: a start never "
        "sent is not sent again (mutation survivor)",
        '            raise ConnectionFailure(self._os_error(error, "connecting"),\n'
        "                                    request_sent=False) from None",
        '            raise ConnectionFailure(self._os_error(error, "connecting"),\n'
        "                                    request_sent=True) from None",
        ("tests/test_degraded.py::test_a_start_the_pool_never_received_is_sent_again",)),
    Bug("tls-error-in-openssls-words",
        "a TLS error line shows OpenSSL's whole text instead of its reason (mutation survivor)",
        'return f"TLS error with {self.endpoint}: {error.reason or error}"',
        'return f"TLS error with {self.endpoint}: {error.reason and error}"',
        ("tests/test_agent_failures.py::test_connection_failures_are_said_plainly",)),
    Bug("connection-error-with-errno",
        "a refused connection is said with its errno number (mutation survivor)",
        "reason = error.strerror or str(error) or type(error).__name__",
        "reason = error.strerror and str(error) or type(error).__name__",
        ("tests/test_agent_failures.py::test_connection_failures_are_said_plainly",)),
    Bug("ca-file-error-in-openssls-words",
        "an unusable ssl_ca_file is said with OpenSSL's whole text (mutation survivor)",
        'reason = getattr(error, "reason", None) or getattr(error, "strerror", None) \\',
        'reason = getattr(error, "reason", None) and getattr(error, "strerror", None) \\',
        ("tests/test_units.py::test_an_unusable_ca_file_is_named_with_openssls_reason_only",)),
    Bug("resolver-failure-kills-its-thread",
        "a name the resolver cannot look up ends its thread with a traceback and is "
        "reported as a timeout (mutation survivor)",
        "        except OSError as error:  # gaierror, or a resolver that cannot run at all",
        "        except ZeroDivisionError as error:  # gaierror, or a resolver that cannot run "
        "at all",
        ("tests/test_degraded.py::test_a_name_the_resolver_cannot_look_up_is_one_line",)),
    Bug("idna-reason-lost",
        "a host name IDNA cannot encode is refused without the codec's reason "
        "(mutation survivor)",
        'reason = str(error).rpartition("(")[2].rstrip(")") or "invalid"',
        'reason = str(error).rpartition("(")[2].rstrip(")") and "invalid"',
        ("tests/test_units.py::test_endpoint_refuses_what_cannot_be_reached",)),
    Bug("stdin-unbounded",
        "parameters on stdin are read whatever their size",
        "        if len(data) > MAX_STDIN_BYTES:\n",
        "        if False:\n",
        ("tests/test_agent_failures.py::test_stdin_is_read_up_to_1_mib",)),
    Bug("unbounded-headers",
        "more than 100 headers or 64 KiB of them are read",
        "            if count > MAX_HEADERS or total > MAX_HEADER_BYTES:\n",
        "            if False:\n",
        ("tests/test_agent_failures.py::test_an_answer_over_a_bound_is_refused_for_that_bound",)),
    Bug("unbounded-line",
        "a status or header line over 8 KiB is read",
        "                if end > limit:\n                    break\n",
        "                if False:\n                    break\n",
        ("tests/test_agent_failures.py::test_an_answer_over_a_bound_is_refused_for_that_bound",)),
    Bug("unbounded-content-length",
        "a Content-Length over the answer's cap is read",
        "            if length > answer.limit:\n",
        "            if False:\n",
        ("tests/test_agent_failures.py::test_an_answer_over_a_bound_is_refused_for_that_bound",)),
    Bug("unbounded-chunked-total",
        "chunks adding up to more than the answer's cap are read",
        "                total += size\n                if total > answer.limit:\n",
        "                total += size\n                if False:\n",
        ("tests/test_agent_failures.py::test_an_answer_over_a_bound_is_refused_for_that_bound",)),
    Bug("unbounded-http10-total",
        "an answer that ends at the connection's close is read past its cap",
        "                    total += len(self.buffer)\n"
        "                    if total > answer.limit:\n",
        "                    total += len(self.buffer)\n                    if False:\n",
        ("tests/test_agent_failures.py::test_an_answer_over_a_bound_is_refused_for_that_bound",)),
    Bug("unbounded-interim",
        "more than 8 interim (1xx) answers are read",
        "        for _ in range(MAX_INTERIM_RESPONSES + 1):\n",
        "        for _ in range(10 ** 6):\n",
        ("tests/test_agent_failures.py::test_an_answer_over_a_bound_is_refused_for_that_bound",)),
    Bug("port-1-refused",
        "session_url port 1 is refused (mutation survivor)",
        "not 0 < int(port_text) < 65536:",
        "not 1 < int(port_text) < 65536:",
        ("tests/test_units.py::test_endpoints",)),
    Bug("host-name-of-253-refused",
        "a host name of 253 characters, the longest DNS allows, is refused (mutation survivor)",
        "    if len(name) > 253 or not all(",
        "    if len(name) >= 253 or not all(",
        ("tests/test_units.py::test_endpoints",)),
    Bug("trailing-dot-hides-the-name",
        "a host name ending in a dot is checked as its first character only "
        "(mutation survivor)",
        '    name = host[:-1] if host.endswith(".") else host',
        '    name = host[:1] if host.endswith(".") else host',
        ("tests/test_units.py::test_endpoint_refuses_what_cannot_be_reached",)),
    Bug("record-map-depth-unbounded",
        "a VM record's field nested deeper than 64 levels is read past",
        "        if len(self._stack) >= MAX_DEPTH:\n",
        "        if False:\n",
        ("tests/test_agent_failures.py::test_a_record_nested_deeper_than_64_levels_is_refused",)),
    Bug("ipv6-zone-refused",
        "an IPv6 session_url with a zone (fe80::1%eth0) is refused (mutation survivor)",
        'socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])',
        'socket.inet_pton(socket.AF_INET6, host.split("%", 0)[0])',
        ("tests/test_units.py::test_endpoints",)),
    Bug("chunk-size-not-hexadecimal",
        "chunk sizes are read in another base than 16 (mutation survivor)",
        "                size = int(size_line, 16)\n",
        "                size = int(size_line, 17)\n",
        ("tests/test_hostile.py::test_every_valid_framing_of_an_answer_is_read",)),
    Bug("connection-close-ignored",
        "an HTTP/1.1 answer with Connection: close keeps its connection (mutation survivor)",
        '        keep_alive = match.group(1) == b"1" and \\',
        '        keep_alive = match.group(1) == b"1" or \\',
        ("tests/test_agent_failures.py::test_connection_close_is_honoured",)),
    Bug("answer-of-8-mib-refused",
        "an answer of exactly 8 MiB, ended by the close, is refused (mutation survivor)",
        "                    total += len(self.buffer)\n"
        "                    if total > answer.limit:\n",
        "                    total += len(self.buffer)\n"
        "                    if total >= answer.limit:\n",
        ("tests/test_agent_failures.py::test_an_answer_of_exactly_8_mib_is_read",)),
    Bug("uuid-plug-reads-every-vm",
        "a UUID plug also reads every VM's record (the whitespace scan names need), so a "
        "fence by UUID grows with the pool",
        "    if any(not target.uuid_only and not UUID_RE.match(target.text) for target in "
        "targets):",
        "    if any(not target.uuid_only for target in targets):",
        ("tests/test_units.py::test_only_a_name_reads_every_vm",)),
    Bug("already-off-if-any-was",
        "off of several plugs says Already OFF when only one of them was (own-operator "
        "mutant any for all)",
        'write_output(f"Success: Already {state}\\n" if all(already) else',
        'write_output(f"Success: Already {state}\\n" if any(already) else',
        ("tests/test_agent_resolution.py::test_several_plugs_one_already_off_are_powered_off",)),
    Bug("logout-waits-shell-timeout",
        "a hanging logout waits shell_timeout instead of at most 2 s (own-operator mutant "
        "max for min)",
        "        return min(LOGOUT_TIMEOUT, max(self._timeouts.query, 0.5))",
        "        return max(LOGOUT_TIMEOUT, max(self._timeouts.query, 0.5))",
        ("tests/test_agent_failures.py::"
         "test_logout_that_hangs_after_a_verified_fence_is_a_warning",)),
    Bug("idle-close-unnoticed",
        "a kept-alive connection the host closed while idle is used again (mutation "
        "survivor)",
        "        return bool(readable) or bool(self._buffer)",
        "        return bool(readable) and bool(self._buffer)",
        ("tests/test_agent_failures.py::"
         "test_a_connection_the_host_closed_while_idle_is_replaced_unused",)),
    Bug("version-unknown",
        "the checkout's version is lost",
        'return f"{match.group(1)}+checkout" if match else "unknown"',
        'return "unknown"',
        ("tests/test_units.py::test_version_from_meson_build_in_a_checkout",
         "tests/test_agent_actions.py::test_version")),
    Bug("unreachable-pool-is-success",
        "a pool that refuses every login (all hosts in emergency mode) ends the run with "
        "exit 0: the fencer takes level 1 as done and never tries level 2",
        "                raise self._failure()",
        "                sys.exit(0)",
        ("tests/test_pacemaker_level2.py::test_second_level_fences_when_the_pool_cannot",)),
    Bug("plug-matches-last-word",
        "a plug no VM is named falls back to a VM whose name ends with it as a word (node "
        "web fences VM \"vm web\")",
        "            raise FenceError(f\"no VM with the name or UUID {target.describe()}\")",
        "            vm = next(v for v in list_vms(session) if v.name.split()[-1:] == "
        "[target.text])",
        ("tests/test_pacemaker.py::test_dynamic_list_never_fences_a_spaced_vm_name_for_one_word",)),
    Bug("monitor-ignores-permissions",
        "monitor passes any user that can log in (a read-only role passes)",
        "    if missing:\n        reason =",
        "    if missing and False:\n        reason =",
        ("tests/test_agent_actions.py::test_monitor_refuses_the_read_only_user",
         "tests/test_agent_actions.py::test_monitor_refuses_a_user_that_cannot_fence")),
    Bug("monitor-forgets-power-state-reset",
        "monitor does not ask for vm.power_state_reset with allow_power_state_reset=1",
        "(RESET_PERMISSIONS if opts.allow_power_state_reset else ())",
        "()",
        ("tests/test_agent_actions.py::test_monitor_refuses_a_user_that_cannot_fence",)),
    Bug("monitor-superuser-by-empty-list",
        "monitor trusts rbac_permissions alone: root's empty list fails it",
        "    if record.get(\"is_local_superuser\") is True:\n",
        "    if False:\n",
        ("tests/test_agent_actions.py::test_monitor_passes_a_user_that_can_fence",)),
    Bug("monitor-old-pool-fails",
        "a pool without rbac_permissions fails the monitor",
        "    if held is None:  # the field",
        "    if held is None and False:  # the field",
        ("tests/test_agent_actions.py::test_monitor_on_a_pool_older_than_rbac_passes_and_says_why",)),
    Bug("status-line-shown-in-81",
        "a status line the agent cannot read is shown in 81 characters (mutation survivor)",
        "{printable(line.decode('latin-1'), 80)!r}",
        "{printable(line.decode('latin-1'), 81)!r}",
        ("tests/test_agent_failures.py::test_a_malformed_status_line_or_length_is_shown_bounded",)),
    Bug("content-length-shown-in-39",
        "a Content-Length the agent cannot read is shown in 39 characters (mutation survivor)",
        'raise AnswerError(f"Content-Length {printable(text, 40)!r}")',
        'raise AnswerError(f"Content-Length {printable(text, 39)!r}")',
        ("tests/test_agent_failures.py::test_a_malformed_status_line_or_length_is_shown_bounded",)),
    Bug("status-199-final",
        "a 199 status line is taken as the final answer (mutation survivor)",
        "            if status >= 200:\n",
        "            if status >= 199:\n",
        ("tests/test_agent_failures.py::test_a_199_answer_is_interim",)),
    Bug("refusal-called-a-timeout",
        "a login refused with under a second of login_timeout left is also reported as "
        "timed out (mutation survivor)",
        "        if self.deadline.remaining() <= 0:\n            problems.append(",
        "        if self.deadline.remaining() <= 1:\n            problems.append(",
        ("tests/test_agent_failures.py::"
         "test_a_refusal_with_under_a_second_left_is_not_called_a_timeout",)),
    Bug("refused-username-in-81",
        "a refused username is shown in 81 characters (mutation survivor)",
        "shown_value(self.race.username, 80)",
        "shown_value(self.race.username, 81)",
        ("tests/test_agent_failures.py::"
         "test_a_refused_long_username_is_shown_in_80_characters",)),
    Bug("silent-host-said-to-have-the-password",
        "every attempt counts as having sent the password: a host whose TLS handshake never "
        "ended is reported as silent after the login (mutation survivor)",
        "        self.sent = False  # the password went out",
        "        self.sent = True  # the password went out",
        ("tests/test_degraded.py::"
         "test_a_silent_host_is_named_with_whether_it_got_the_password",)),
    Bug("stale-redirect-ends-the-login",
        "a redirect to a host already tried ends the login with hosts still listed after it "
        "(mutation survivor)",
        "                self._note_repeat(endpoint, chain, self._attempts[key])\n"
        "                continue\n",
        "                self._note_repeat(endpoint, chain, self._attempts[key])\n"
        "                break\n",
        ("tests/test_degraded.py::"
         "test_a_stale_redirect_to_a_tried_host_moves_on_to_the_next_listed",)),
    Bug("late-logout-failure-escapes",
        "a late session whose logout fails raises out of its login thread (a traceback) "
        "instead of a warning (mutation survivor)",
        "        except FenceError as error:\n"
        "            log.warning(\"logout failed, the session will expire on the pool: %s\", "
        "error)\n        finally:\n            self.channel.close()",
        "        except ZeroDivisionError as error:\n"
        "            log.warning(\"logout failed, the session will expire on the pool: %s\", "
        "error)\n        finally:\n            self.channel.close()",
        ("tests/test_degraded.py::test_late_session_whose_logout_fails_is_a_warning",)),
    Bug("host-listed-twice-is-a-redirect",
        "a host listed twice in session_url is taken for a redirect to a tried host (an "
        "IndexError on the empty chain) (mutation survivor)",
        "        elif chain and earlier.answered:",
        "        elif chain or earlier.answered:",
        ("tests/test_degraded.py::test_a_host_listed_twice_is_asked_once",)),
    Bug("password-after-the-decision",
        "an attempt that finished connecting after another host won may still send the "
        "password (mutation survivor)",
        "            if self._decided is not None or self._closed or address in self._addresses:",
        "            if self._decided is not None and self._closed or address in self._addresses:",
        ("tests/test_units.py::test_no_password_leaves_once_the_login_race_is_decided",)),
    Bug("queued-session-left-open",
        "a session still queued when the login race closes is never logged out (mutation "
        "survivor)",
        "            for attempt, outcome in queued:\n",
        "            for attempt, outcome in []:\n",
        ("tests/test_units.py::test_a_session_queued_when_the_login_race_closes_is_logged_out",)),
    Bug("line-at-the-cap-refused",
        "a line whose line end sits exactly at the cap is refused (mutation survivor)",
        "                if end > limit:\n",
        "                if end >= limit:\n",
        ("tests/test_agent_failures.py::test_an_answer_at_a_bound_is_read",)),
    Bug("line-at-the-cap-refused-before-its-end",
        "a line as long as the cap is refused before its line end arrives (mutation "
        "survivor)",
        "            if len(self.buffer) > limit:\n",
        "            if len(self.buffer) >= limit:\n",
        ("tests/test_agent_failures.py::test_an_answer_at_a_bound_is_read",)),
    Bug("chunk-size-line-cap-shorter",
        "a chunk-size line of 1 KiB is refused (mutation survivor)",
        "size_line = self.line(1024)",
        "size_line = self.line(1023)",
        ("tests/test_agent_failures.py::test_an_answer_at_a_bound_is_read",)),
    Bug("chunk-size-line-cap-longer",
        "a chunk-size line over 1 KiB is read (mutation survivor)",
        "size_line = self.line(1024)",
        "size_line = self.line(1025)",
        ("tests/test_agent_failures.py::test_an_answer_over_a_bound_is_refused_for_that_bound",)),
    Bug("header-without-colon-read",
        "a header line without a colon, or a header name that is no token, is read "
        "(mutation survivor)",
        "            if not colon or not re.fullmatch(",
        "            if not colon and not re.fullmatch(",
        ("tests/test_agent_failures.py::test_an_answer_over_a_bound_is_refused_for_that_bound",)),
    Bug("host-header-brackets-a-name",
        "the Host header brackets what is no IPv6 address (mutation survivor)",
        'host = f"[{self.endpoint.host}]" if ":" in self.endpoint.host else',
        'host = f"[{self.endpoint.host}]" if ":" not in self.endpoint.host else',
        ("tests/test_units.py::test_the_host_header_brackets_an_ipv6_address_only",)),
    Bug("body-read-past-its-length",
        "a body of given length is read past its end (mutation survivor)",
        "data = self.sock.recv(min(size, RECV_SIZE))",
        "data = self.sock.recv(max(size, RECV_SIZE))",
        ("tests/test_agent_failures.py::"
         "test_bytes_after_a_body_of_given_length_are_not_read_into_it",)),
    Bug("chunk-end-misread",
        "a stray byte after a chunk's data is refused as a line over 1 byte, not as a chunk "
        "longer than its size (mutation survivor)",
        "                if self.line(2):\n",
        "                if self.line(1):\n",
        ("tests/test_agent_failures.py::test_an_answer_over_a_bound_is_refused_for_that_bound",)),
    Bug("connection-close-inverted",
        "connections are kept after Connection: close and closed after keep-alive answers "
        "(mutation survivor)",
        "            if not keep_alive or exchange.buffer:",
        "            if keep_alive or exchange.buffer:",
        ("tests/test_agent_failures.py::test_connection_close_is_honoured",)),
    Bug("body-one-byte-short",
        "a body of given length is read one byte short when its last byte comes alone "
        "(mutation survivor)",
        "        while size > 0:\n",
        "        while size > 1:\n",
        ("tests/test_agent_failures.py::"
         "test_bytes_after_a_body_of_given_length_are_not_read_into_it",)),
    Bug("lookup-deaf-to-abort",
        "a name lookup's wait does not end when the login race aborts it: the attempt waits "
        "until login_timeout, past close() (mutation survivor)",
        "    done = wake or threading.Event()\n",
        "    done = wake and threading.Event()\n",
        ("tests/test_degraded.py::"
         "test_a_lookup_cut_off_by_the_winner_leaves_no_thread_behind",)),
    Bug("idna-reason-a-parenthesis",
        "a host name IDNA cannot encode is refused with '(' for the codec's reason "
        "(mutation survivor)",
        'reason = str(error).rpartition("(")[2].rstrip(")") or "invalid"',
        'reason = str(error).rpartition("(")[1].rstrip(")") or "invalid"',
        ("tests/test_units.py::test_endpoint_refuses_what_cannot_be_reached",)),
    Bug("monitor-plural-wrong",
        "the monitor's refusal says 'permissions' for one missing permission (mutation "
        "survivor)",
        "f\"permission{'s' if len(missing) > 1 else ''}",
        "f\"permission{'s' if len(missing) >= 1 else ''}",
        ("tests/test_agent_actions.py::test_monitor_refuses_a_user_that_cannot_fence",)),
    Bug("monitor-reset-reason-always",
        "the monitor's refusal names allow_power_state_reset=1 when the reset is not what "
        "is missing (mutation survivor)",
        "if set(missing) & set(RESET_PERMISSIONS) else",
        "if set(missing) | set(RESET_PERMISSIONS) else",
        ("tests/test_agent_actions.py::test_monitor_refuses_a_user_that_cannot_fence",)),
    Bug("monitor-gives-up-after-relogin",
        "monitor fails when a relogin replaced the session it was reading (mutation "
        "survivor)",
        '        if failure.code != "HANDLE_INVALID" or session.ref in (ref, None):',
        '        if failure.code == "HANDLE_INVALID" or session.ref in (ref, None):',
        ("tests/test_agent_actions.py::test_monitor_reads_the_new_session_after_a_relogin",)),
    Bug("monitor-retries-any-error-after-relogin",
        "monitor reads the new session's record again after any error once a relogin "
        "happened, hiding that error (mutation survivor)",
        '        if failure.code != "HANDLE_INVALID" or session.ref in (ref, None):',
        '        if failure.code != "HANDLE_INVALID" and session.ref in (ref, None):',
        ("tests/test_agent_actions.py::test_monitor_fails_on_another_error_after_a_relogin",)),
    Bug("uuid-plug-makes-names-exact",
        "a UUID plug beside a name plug skips the whitespace-ignoring read: 'web' and 'web ' "
        "no longer ambiguous (own-operator mutant all for any)",
        "    if any(not target.uuid_only and not UUID_RE.match(target.text) for target in "
        "targets):",
        "    if all(not target.uuid_only and not UUID_RE.match(target.text) for target in "
        "targets):",
        ("tests/test_agent_resolution.py::"
         "test_a_name_beside_a_uuid_plug_is_still_compared_with_whitespace_ignored",)),
    Bug("quoted-name-not-looked-up",
        "a name holding a double quote is not looked up by name (a template of that name is "
        "reported missing) (mutation survivor)",
        "    for name in fallback:\n",
        "    for name in []:\n",
        ("tests/test_agent_resolution.py::"
         "test_a_template_named_with_a_quote_is_refused_as_a_template",)),
    Bug("fingerprints-shown-in-81",
        "a value of ssl_fingerprint without a fingerprint is shown in 81 characters (mutation "
        "survivor)",
        '        raise UsageError(f"ssl_fingerprint={shown_value(text, 80)}: not a SHA-256 "\n'
        '                         "fingerprint (64 hex digits, colons allowed)")\n    return tuple',
        '        raise UsageError(f"ssl_fingerprint={shown_value(text, 81)}: not a SHA-256 "\n'
        '                         "fingerprint (64 hex digits, colons allowed)")\n    return tuple',
        ("tests/test_units.py::test_a_bad_fingerprint_is_shown_in_80_characters",)),
    Bug("fingerprint-shown-in-79",
        "a bad ssl_fingerprint is shown in 79 characters (mutation survivor)",
        '        raise UsageError(f"ssl_fingerprint={shown_value(text, 80)}: not a SHA-256 "\n'
        '                         "fingerprint (64 hex digits, colons allowed)")\n    return bytes',
        '        raise UsageError(f"ssl_fingerprint={shown_value(text, 79)}: not a SHA-256 "\n'
        '                         "fingerprint (64 hex digits, colons allowed)")\n    return bytes',
        ("tests/test_units.py::test_a_bad_fingerprint_is_shown_in_80_characters",)),
    Bug("fingerprint-label-alone-parsed",
        "openssl's label followed by a blank ('Fingerprint= AB:…') is parsed as a "
        "fingerprint and refused (mutation survivor)",
        '        value = token.split("=", 1)[-1]\n',
        '        value = token.split("=", 0)[-1]\n',
        ("tests/test_units.py::test_fingerprints_one_per_host",)),
    Bug("shown-value-at-its-limit-hides-more",
        "a value whose first line is exactly the limit long is shown without the mark that "
        "more lines follow (mutation survivor)",
        "    if first != text and len(first) <= limit:",
        "    if first != text and len(first) < limit:",
        ("tests/test_units.py::test_shown_value_is_the_first_line_only",)),
    Bug("target-shown-in-101",
        "a plug quoted in a refusal is shown in 101 characters (mutation survivor)",
        "        text = shown_value(self.text, 100)",
        "        text = shown_value(self.text, 101)",
        ("tests/test_units.py::test_a_target_is_described_in_100_characters",)),
)


def run_bug(bug: Bug, python: str) -> tuple[str, float]:
    started = time.monotonic()
    with scratch_copy() as copy:
        agent = copy / "fence_xenapi.py"
        text = agent.read_text(encoding="utf-8")
        if text.count(bug.old) != 1:
            return "STALE", 0.0
        agent.write_text(text.replace(bug.old, bug.new), encoding="utf-8")
        done = subprocess.run([python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               *bug.tests], cwd=copy, capture_output=True, text=True,
                              check=False)
    outcome = "CAUGHT" if done.returncode == 1 else (
        "MISSED" if done.returncode == 0 else f"ERROR (pytest exit {done.returncode})")
    if outcome != "CAUGHT":
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-2000:])
    return outcome, time.monotonic() - started


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="bugs to plant (default: all)")
    parser.add_argument("--list", action="store_true", help="list the bugs and exit")
    args = parser.parse_args(argv)
    if args.list:
        for bug in BUGS:
            print(f"{bug.name}: {bug.what}")
        return 0
    chosen = [bug for bug in BUGS if not args.names or bug.name in args.names]
    unknown = set(args.names) - {bug.name for bug in BUGS}
    if unknown:
        parser.error(f"unknown bug(s): {', '.join(sorted(unknown))}")
    python = str(ROOT / ".venv" / "bin" / "python")
    results = []
    for bug in chosen:
        outcome, seconds = run_bug(bug, python)
        results.append(outcome)
        print(f"{outcome:8} {seconds:5.1f} s  {bug.name}: {bug.what}", flush=True)
    return 0 if all(r in ("CAUGHT", "STALE") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
