"""A runner's progress callback that records what it was told, for the runner tests."""


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
