"""The benchmark's pure logic (bench/): the results table of B4 and of the
flatness check, the bulk seeding's statements, the merge of a step run by
several sipp processes, and the fan-out UA's reading of final NOTIFYs."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))

import fanout  # noqa: E402
import report  # noqa: E402
import seed  # noqa: E402
import sipp  # noqa: E402


def test_flatness_is_the_ratio_of_many_to_few_against_the_goal():
    assert report.flatness(2.0, 2.2) == {"ratio": 1.1, "flat": True}
    assert report.flatness(2.0, 2.3) == {"ratio": 1.15, "flat": False}
    assert report.flatness(None, 2.0) == {"ratio": None, "flat": False}
    assert report.flatness(2.0, None)["flat"] is False


def test_label_numbers_are_grouped_by_thousands():
    assert report.label_number(1_000_000) == "1 000 000"
    assert report.label_number(1000.0) == "1 000"
    assert report.label_number(250) == "250"
    assert report.label_number(2.5) == "2.5"


def _record(few, many, rows=1_000_000, missing=0, duplicated=0):
    return {
        "B4": {
            "ours": {"best_rate": 400, "cpu_per_1000": 1.0,
                     "fanout": {"watchers": 200, "notifies_per_publish": 200.0,
                                "expiry": {"subscriptions": 100, "terminated_once": 100 - missing - duplicated,
                                           "missing": missing, "duplicated": duplicated}}},
            "native": {"best_rate": 100, "cpu_per_1000": 2.0,
                       "fanout": {"watchers": 200, "notifies_per_publish": 200.0,
                                  "expiry": {"subscriptions": 100, "terminated_once": 99,
                                             "missing": 0, "duplicated": 1}}},
        },
        "FLAT": {"ours": {"subscriptions": {
            "few_rows": 1000, "many_rows": rows, "few": {"cpu_per_1000": few, "mariadb_rss_mb": 200.0},
            "many": {"cpu_per_1000": many, "db_mb": 812.4, "mariadb_rss_mb": 640.0, "seed_s": 70},
            **report.flatness(few, many)}}},
    }


def _rows(summary):
    return {(bench, metric): cells for bench, metric, *cells in report.table_rows(summary)}


def test_b4_rows_compare_ours_with_native_and_count_what_expiry_got_wrong():
    rows = _rows(report.summarize({"repeats": [_record(2.0, 2.1)]}))
    bench = "B4 two nodes, one database"
    assert rows[(bench, "max rate, new dialogs over both nodes (dialogs/s)")] == ["400", "100", "-", "4.00"]
    assert rows[(bench, "CPU s / 1000 dialogs, at max rate")][3] == "0.50"
    assert rows[(bench, "fan-out: NOTIFYs per PUBLISH (distinct)")][:2] == ["200.0", "200.0"]
    once = rows[(bench, "expiry under the fan-out: subscriptions ended by exactly one NOTIFY (of 100)")]
    assert once[:2] == ["100", "99"]
    assert rows[(bench, "expiry: missing + duplicated final NOTIFYs (goal 0)")][:2] == ["0", "1"]


def test_flat_rows_name_the_rows_stored_and_take_medians_over_repetitions():
    summary = report.summarize({"repeats": [_record(2.0, 2.1), _record(2.0, 2.4), _record(2.0, 2.2)]})
    rows = _rows(summary)
    bench = "flatness (ours): stored subscriptions"
    assert rows[(bench, "CPU s / 1000 dialogs (B1), 1 000 stored")][0] == "2 [2-2]"
    assert rows[(bench, "CPU s / 1000 dialogs (B1), 1 000 000 stored")][0] == "2.2 [2.1-2.4]"
    assert rows[(bench, "many / few (flat: <= 1.10)")][0] == "1.100 [1.050-1.200]"
    assert rows[(bench, "database size with 1 000 000 stored (MB, data + index)")][0].startswith("812")
    assert rows[(bench, "mariadbd RSS with 1 000 000 stored (MB, restarted for each case)")][0].startswith("640")
    assert rows[(bench, "mariadbd RSS with 1 000 stored (MB, restarted for each case)")][0] == "200 [200-200]"
    # Not measured: no row (publications, watched presentities).
    assert not any(b.startswith("flatness (ours): stored publications") for b, _ in rows)


def test_a_smaller_flat_max_shows_in_the_labels():
    rows = _rows(report.summarize({"repeats": [_record(2.0, 2.1, rows=200_000)]}))
    assert ("flatness (ours): stored subscriptions", "CPU s / 1000 dialogs (B1), 200 000 stored") in rows


def test_chunks_cover_every_row_once_in_order():
    assert seed.chunks(250_000, 100_000) == [(0, 99_999), (100_000, 199_999), (200_000, 249_999)]
    assert seed.chunks(1000, 100_000) == [(0, 999)]
    assert seed.chunks(0) == []
    covered = [i for a, b in seed.chunks(1_000_000) for i in range(a, b + 1)]
    assert covered == list(range(1_000_000))


def test_literals_are_plain_or_refused():
    assert seed.literal("udp:127.0.0.1:5060") == "'udp:127.0.0.1:5060'"
    assert seed.literal(None) == "NULL"
    assert seed.literal(4_000_000_000) == "4000000000"
    for bad in ("it's", "a\\b", "x\n"):
        with pytest.raises(ValueError):
            seed.literal(bad)


def test_subscriptions_are_selected_from_the_sequence_table_with_distinct_dialogs():
    exprs = seed.subscription_exprs(35060, 5000, 1_700_000_000)
    sql = seed.insert_select("pa_subscription", exprs, 100_000, 199_999)
    assert sql.startswith("INSERT INTO pa_subscription (presence_domain, event, ")
    assert " FROM seq_100000_to_199999" in sql
    # The dialog (the table's unique key) varies with seq; the presentity
    # cycles over `presentities`; nothing expires during a run.
    assert exprs["call_id"] == "CONCAT('stored-', seq)"
    assert exprs["presentity"] == "CONCAT('other', seq % 5000, '@127.0.0.1')"
    assert exprs["expires_at"] == str(seed.FAR_FUTURE)
    assert exprs["socket"] == "'udp:127.0.0.1:35060'"


def test_clones_replace_the_template_user_keep_other_columns_and_skip_the_id():
    columns = {"id": ("NO", None, "auto_increment", "bigint"),
               "presentity": ("NO", None, "", "varchar"),
               "parts": ("NO", None, "", "mediumblob"),
               "expires_at": ("NO", None, "", "int"),
               "etag": ("NO", None, "", "varchar")}
    exprs = seed.clone_exprs(columns, "flatpub", {"etag": "CONCAT(%(etag)s, seq)"})
    assert "id" not in exprs
    assert exprs["presentity"] == "REPLACE(%(presentity)s, 'pres0@', CONCAT('flatpub', seq, '@'))"
    assert exprs["parts"].startswith("REPLACE(%(parts)s, ")
    assert exprs["expires_at"] == "%(expires_at)s"
    assert exprs["etag"] == "CONCAT(%(etag)s, seq)"
    sql = seed.insert_select("pa_publication", exprs, 0, 999)
    assert sql.endswith(" FROM seq_0_to_999")
    # The template's values are the statement's parameters.
    assert (sql % {"presentity": "'pres0@127.0.0.1'", "parts": "'{}'", "expires_at": 9, "etag": "'e'"}
            ).startswith("INSERT INTO pa_publication (presentity, parts, expires_at, etag) SELECT "
                         "REPLACE('pres0@127.0.0.1', 'pres0@', CONCAT('flatpub', seq, '@')), ")


def _part(calls, successful, passed=True, reason="ok", **extra):
    return {"target_rate": 50.0, "calls": calls, "returncode": 0, "created": calls,
            "successful": successful, "failed": calls - successful, "achieved_rate": 49.0,
            "peak_open_calls": 3, "wall_s": 3.2, "last_call_started_s": 3.0, "tail_s": 0.2,
            "server_udp_drops": 0, "passed": passed, "reason": reason, **extra}


def test_a_step_over_two_nodes_sums_counts_and_passes_only_if_both_did():
    merged = sipp.merge([_part(150, 150), _part(150, 149)], 100.0)
    assert merged["passed"] and merged["reason"] == "ok"
    assert (merged["calls"], merged["successful"], merged["achieved_rate"]) == (300, 299, 98.0)
    assert merged["target_rate"] == 100.0
    failed = sipp.merge([_part(150, 150), _part(150, 10, passed=False, reason="10 of 150 calls succeeded",
                                                errors="timeout")], 100.0)
    assert not failed["passed"]
    assert failed["reason"] == "node 1: 10 of 150 calls succeeded"
    assert "timeout" in failed["errors"]
    timed_out = sipp.merge([_part(150, 150), dict(_part(150, 150), returncode=None)], 100.0)
    assert timed_out["returncode"] is None


def test_final_notifies_are_told_by_their_subscription_state():
    assert fanout.is_terminated("terminated;reason=timeout")
    assert fanout.is_terminated(" Terminated ; reason=noresource")
    assert not fanout.is_terminated("active;expires=20")
    assert not fanout.is_terminated("")


def test_a_change_notified_twice_to_one_watcher_is_a_repeat_a_retransmission_is_not():
    notifies = {("a", "2 NOTIFY", b"1"), ("a", "3 NOTIFY", b"2"), ("b", "2 NOTIFY", b"1")}
    assert fanout.repeated_changes(notifies) == 0
    notifies |= {("a", "4 NOTIFY", b"2"), ("a", "3 NOTIFY", b"2")}
    assert fanout.repeated_changes(notifies) == 1
    presence, dialog = fanout.PACKAGES["presence"][5], fanout.PACKAGES["dialog"][5]
    assert presence.search(b"<note>bench-step-17</note>").group(1) == b"17"
    assert dialog.search(b'<dialog id="bench-step-17" direction').group(1) == b"17"


def test_expiry_counts_missing_and_duplicated_final_notifies():
    f = fanout.Fanout.__new__(fanout.Fanout)
    f.expiring_n, f.expiry_seconds = 4, 20
    f.expiring = {"a": {3}, "b": set(), "c": {3, 4}, "d": {2}}
    f.expiring_started = {"a", "b", "c", "d"}
    f.failed_subscribe = {}
    f.last_terminated_at = 0.0
    r = f.expiry_result(0.0)
    assert (r["terminated_once"], r["missing"], r["duplicated"], r["exactly_once"]) == (2, 1, 1, False)
    f.expiring = {"a": {3}, "b": {5}}
    f.expiring_n = 2
    assert f.expiry_result(0.0)["exactly_once"] is True
