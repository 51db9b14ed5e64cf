"""The job manager's lifecycle without training anything: workers are stand-ins for ``python -m service.jobs``."""

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
