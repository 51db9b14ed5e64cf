"""The job manager's lifecycle without training anything: workers are stand-ins for ``python -m service.job_worker``."""

from service import jobs
from service.jobs import JobManager, read_status
from service.metrics import Metrics


class FakeWorker:
    def __init__(self, cmd, **_):
        self.cmd, self.terminated = cmd, False

    def poll(self):
        return -15 if self.terminated else None

    def terminate(self):
        self.terminated = True

    def wait(self, timeout=None):
        return -15

    def kill(self):
        self.terminated = True


def test_stopping_starts_nothing_new_and_fails_the_queued_jobs(tmp_path, monkeypatch):
    """stop() used to end with a pump that started the next queued job: a worker outliving its server."""
    started = []
    monkeypatch.setattr(jobs.subprocess, "Popen", lambda cmd, **kw: started.append(FakeWorker(cmd)) or started[-1])
    m = JobManager(tmp_path, tmp_path / "bundle", Metrics(), workers=1)
    train = {"source": "rule", "rule": "bright", "train": {"steps": 10}}
    first, second = (m.create(name, train, {})["id"] for name in ("a", "b"))
    m.pump()
    assert len(started) == 1 and read_status(m.registry, first)["state"] == "queued"  # the worker writes 'running'
    m.stop()
    assert len(started) == 1 and started[0].terminated
    assert read_status(m.registry, first)["error"]["code"] == "worker_died"
    queued = read_status(m.registry, second)
    assert queued["state"] == "failed" and queued["error"]["code"] == "server_stopped"


class FlakyStore:
    """A registry whose store is away while ``down`` is set."""

    def __init__(self, inner):
        self.inner, self.down, self.spec = inner, False, {}

    def _check(self):
        from service.domain import Kind
        from service.registry import RegistryError

        if self.down:
            raise RegistryError(Kind.UNAVAILABLE, "registry_unavailable", "store away")

    def job_status(self, job_id):
        self._check()
        return self.inner.job_status(job_id)

    def put_job_status(self, job_id, doc):
        self._check()
        self.inner.put_job_status(job_id, doc)

    def job_seen(self, job_id):
        self._check()
        return self.inner.job_seen(job_id)

    def mark_job_seen(self, job_id):
        self._check()
        self.inner.mark_job_seen(job_id)


def test_a_worker_ending_while_the_store_is_away_is_reaped_when_it_returns(tmp_path, monkeypatch):
    from service.registry import Registry

    started = []
    monkeypatch.setattr(jobs.subprocess, "Popen", lambda cmd, **kw: started.append(FakeWorker(cmd)) or started[-1])
    store = FlakyStore(Registry(tmp_path))
    m = JobManager(tmp_path, tmp_path / "bundle", Metrics(), workers=1, registry=store)
    job = m.create("a", {"source": "rule", "rule": "bright", "train": {"steps": 10}}, {})["id"]
    m.pump()
    started[0].terminated = True  # the worker exits ...
    store.down = True  # ... while its status cannot be read
    m.pump()  # used to raise out of the job loop, which then never ran again
    assert job in m.running
    store.down = False
    m.pump()
    assert job not in m.running and read_status(store, job)["error"]["code"] == "worker_died"
    assert "LCS_REGISTRY" not in " ".join(started[0].cmd)  # settings travel in the environment


def test_stop_terminates_workers_even_when_the_store_is_away(tmp_path, monkeypatch):
    from service.registry import Registry

    started = []
    monkeypatch.setattr(jobs.subprocess, "Popen", lambda cmd, **kw: started.append(FakeWorker(cmd)) or started[-1])
    store = FlakyStore(Registry(tmp_path))
    m = JobManager(tmp_path, tmp_path / "bundle", Metrics(), workers=1, registry=store)
    for name in ("a", "b"):
        m.create(name, {"source": "rule", "rule": "bright", "train": {"steps": 10}}, {})
    m.pump()
    store.down = True
    m.stop()
    assert started[0].terminated


def test_a_job_whose_replica_died_without_a_word_is_reported_lost_by_every_replica(tmp_path, monkeypatch):
    """kill -9 of the replica (or its node) leaves the stored state 'running' for good; the owner's heartbeat going
    stale is what tells the others."""
    from service.registry import Registry

    monkeypatch.setattr(jobs.subprocess, "Popen", lambda cmd, **kw: FakeWorker(cmd))
    m = JobManager(tmp_path, tmp_path / "bundle", Metrics(), workers=1)
    job = m.create("a", {"source": "rule", "rule": "bright", "train": {"steps": 10}}, {})["id"]
    m.pump()
    other = Registry(tmp_path)  # another replica on the same registry
    assert read_status(other, job)["state"] == "queued"
    monkeypatch.setattr(jobs.time, "time", lambda real=jobs.time.time: real() + jobs.LOST_AFTER_S + 1)
    lost = read_status(other, job)
    assert lost["state"] == "failed" and lost["error"]["code"] == "worker_lost"
    m._seen = -1e9  # the owner's next pump says it is alive
    m.pump()
    assert read_status(other, job)["state"] == "queued"
