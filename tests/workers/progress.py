"""What the runner tests share: a progress callback that records what it was told, and a
result's file by name."""

from pathlib import Path

from workers.runners import RunResult


def file_named(result: RunResult, name: str) -> Path:
    (path,) = [item.path for item in result.files if item.name == name]
    return path


class ProgressLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, float | None]] = []

    def __call__(self, stage: str, fraction: float | None) -> None:
        self.events.append((stage, fraction))

    def stages(self) -> list[str]:
        distinct: list[str] = []
        for stage, _ in self.events:
            if not distinct or distinct[-1] != stage:
                distinct.append(stage)
        return distinct

    def fractions(self, stage: str) -> list[float | None]:
        return [fraction for name, fraction in self.events if name == stage]
