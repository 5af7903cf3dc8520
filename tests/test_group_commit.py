"""The group commit on its own (the service's tests drive it through real HTTP): what a
request gets when its client left, when scoring fails for the group, the bounded queue, and
how a waiting request's client is seen gone."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from starlette.requests import Request

from credit_risk.serving.batching import ClientLeft, GroupCommit, Overloaded
from credit_risk.serving.request_bodies import client_went_away


def scored_into(scored: list):
    def score(applicants: list[dict], api_keys: list) -> list:
        scored.extend(applicants)
        pairs = zip(applicants, api_keys, strict=True)
        return [{"scored": applicant["id"], "key": key} for applicant, key in pairs]

    return score


async def present() -> bool:
    return False


async def gone() -> bool:
    return True


def test_requests_are_answered_in_groups_and_one_whose_client_left_ends_unscored():
    scored = []

    async def requests():
        commit = GroupCommit(scored_into(scored), ThreadPoolExecutor(1))
        return await asyncio.gather(
            commit.submit({"id": 1}, present, "a"),
            commit.submit({"id": 2}, gone, "b"),
            commit.submit({"id": 3}, present, None),
            return_exceptions=True,
        )

    first, left, third = asyncio.run(requests())
    assert first == {"scored": 1, "key": "a"} and third == {"scored": 3, "key": None}
    # An exception the route answers, not a cancellation that would end the request unanswered.
    assert isinstance(left, ClientLeft)
    assert scored == [{"id": 1}, {"id": 3}]


def test_a_failing_group_fails_each_of_its_requests_and_the_next_group_is_scored():
    calls = []

    def score(applicants, api_keys):
        calls.append(len(applicants))
        if len(calls) == 1:
            raise RuntimeError("model broke")
        return applicants

    async def requests():
        commit = GroupCommit(score, ThreadPoolExecutor(1))
        failed = await asyncio.gather(
            commit.submit({"id": 1}, present, None),
            commit.submit({"id": 2}, present, None),
            return_exceptions=True,
        )
        return failed, await commit.submit({"id": 3}, present, None)

    failed, later = asyncio.run(requests())
    assert [str(error) for error in failed] == ["model broke", "model broke"]
    assert later == {"id": 3} and calls == [2, 1]


def test_a_full_queue_is_overloaded(monkeypatch):
    monkeypatch.setenv("CREDIT_RISK_MAX_WAITING", "2")

    async def requests():
        commit = GroupCommit(scored_into([]), ThreadPoolExecutor(1))
        return await asyncio.gather(
            *(commit.submit({"id": n}, present, None) for n in range(3)),
            return_exceptions=True,
        )

    answers = asyncio.run(requests())
    assert answers[:2] == [{"scored": 0, "key": None}, {"scored": 1, "key": None}]
    with pytest.raises(Overloaded, match="2 requests are waiting"):
        raise answers[2]


def test_a_client_is_seen_gone_only_once_the_server_says_so():
    async def checks():
        arrived = asyncio.Event()

        async def receive():  # as servers do: wait for the next message after the body
            await arrived.wait()
            return {"type": "http.disconnect"}

        request = Request({"type": "http", "method": "POST", "headers": []}, receive)
        present = await client_went_away(request)
        arrived.set()
        return present, await client_went_away(request)

    assert asyncio.run(checks()) == (False, True)
