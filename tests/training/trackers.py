"""Reading back what the training loops sent to their trackers."""

from pathlib import Path


def tensorboard_images(logging_dir: Path) -> dict[str, list[tuple[int, int, int]]]:
    """`{tag: [(step, width, height), ...]}` of the images in the tensorboard event files under `logging_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logging_dir), size_guidance={"images": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.width, event.height) for event in accumulator.Images(tag)]
        for tag in accumulator.Tags()["images"]
    }
