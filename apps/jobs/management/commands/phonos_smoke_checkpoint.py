from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Write a tiny, randomly initialised ESMFold checkpoint for smoke-testing a deployment. "
        "Its structures are meaningless; jobs run on it are marked untrained in their metadata."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="Directory to write (save_pretrained layout)")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, path: Path, seed: int, **options) -> None:
        from workers.checkpoints import write_tiny_esmfold  # needs torch: a worker-only command

        written = write_tiny_esmfold(path, seed=seed)
        self.stdout.write(f"Wrote an UNTRAINED ESMFold checkpoint to {written}")
        self.stdout.write(f"Point workers at it with PHONOS_ESMFOLD_WEIGHTS={written}")
