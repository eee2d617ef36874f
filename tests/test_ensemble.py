import numpy as np

from server import manifest
from server.ensemble import CPU_RUN_IMAGES, Ensemble


def test_a_large_batch_runs_in_pieces_with_the_answers_of_one_run(bundle, mnist_test):
    digits, labels = mnist_test
    m = manifest.load(bundle)
    ensemble = Ensemble(m, device="cpu")
    assert ensemble.run_images == CPU_RUN_IMAGES
    n = 3 * CPU_RUN_IMAGES + 5  # pieces of every size, the last one short
    images = digits[:n].astype(np.float32) / 255.0
    batch = ((images - m.input.mean) / m.input.std)[:, None]
    sizes = []
    run = ensemble.session.run
    ensemble.session.run = lambda names, feed: (
        sizes.append(len(feed[m.input.name])) or run(names, feed)
    )
    pieces = ensemble.run(batch)
    assert sizes == [CPU_RUN_IMAGES] * 3 + [5]
    ensemble.run_images = None
    whole = ensemble.run(batch)
    assert pieces.label.shape == (n,) and pieces.probabilities.shape == (n, 3, 10)
    np.testing.assert_array_equal(pieces.label, whole.label)
    np.testing.assert_array_equal(pieces.votes, whole.votes)
    np.testing.assert_array_equal(pieces.tie_broken, whole.tie_broken)
    np.testing.assert_allclose(pieces.probabilities, whole.probabilities, atol=1e-6)
    assert (pieces.label == labels[:n]).mean() > 0.97
