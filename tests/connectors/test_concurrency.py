"""Many clients at once, on each backend: every exchange answered, audited exactly once, the chain
intact, and no child created twice."""

from concurrent.futures import ThreadPoolExecutor

from click.testing import CliRunner

from tests.support import unique_name, child_update

READ = dict(user_id="load.tester", role="gp", reason_code="data_quality", reason_text="concurrency test")


def test_parallel_pushes_and_reads_keep_the_audit_chain_and_the_index_consistent(gateway):
    family = unique_name("Para")
    seq = gateway.audit_seq()
    children_before = gateway.child_count()
    la_clients = [gateway.client("la") for _ in range(4)]
    health_clients = [gateway.client("health") for _ in range(4)]

    def push(i: int):
        # every pusher sends the same three children: they must exist once each
        client = la_clients[i % 4]
        # three siblings (names are compared by their letters: "Kid1" and "Kid2" would be one name)
        return client.submit_updates([child_update(f"par-{n}", family, ("Ada", "Bartholomew", "Cressida")[n],
                                                   f"201{n + 1}-0{n + 4}-1{n + 5}") for n in range(3)])

    def read(i: int):
        return health_clients[i % 4].find_child(family_name=family, date_of_birth="2015-01-01", **READ)

    with ThreadPoolExecutor(8) as pool:
        pushes = [pool.submit(push, i) for i in range(12)]
        reads = [pool.submit(read, i) for i in range(12)]
        push_results = [f.result(timeout=120) for f in pushes]
        [f.result(timeout=120) for f in reads]

    ids = {r["ChildId"] for batch in push_results for r in batch}
    assert len(ids) == 3, "the same three source records must map to three children"
    assert gateway.child_count() == children_before + 3
    entries = gateway.audit_entries_after(seq)
    assert len(entries) == 24 and all(e["outcome"] == "accepted" for e in entries)
    assert [e["seq"] for e in entries] == list(range(seq + 1, seq + 25))

    from gateway.cli import main as cli_main

    verify = CliRunner().invoke(cli_main, ["--home", str(gateway.home), "--database-url",
                                           gateway.database_url, "audit", "verify"])
    assert verify.exit_code == 0, verify.output


def test_the_same_push_sent_four_times_at_once_is_applied_once(gateway):
    senders = [gateway.client("la") for _ in range(4)]
    data = senders[0].build_request("SubmitUpdates", ChildUpdate=[
        child_update("dup-1", unique_name("Quad"), "Liv", "2017-07-07")])
    before = gateway.child_count()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda c: c.post_raw("SubmitUpdates", data), senders))
    from lxml import etree

    # A copy that arrives while the first is in flight is answered at once: the first answer (its
    # transaction committed first) or, on PostgreSQL, Unavailable ("retry shortly") — and retried,
    # the first answer.
    assert all(status == 200 or (status == 503 and senders[0].fault_code(envelope) == "Unavailable")
               for status, envelope in answers)
    answers = [(status, envelope) if status == 200 else senders[0].post_raw("SubmitUpdates", data)
               for status, envelope in answers]
    assert {status for status, _ in answers} == {200}
    bodies = {etree.tostring(envelope) for _, envelope in answers}
    assert len(bodies) == 1, "every copy gets the very same (first) answer"
    assert gateway.child_count() == before + 1
