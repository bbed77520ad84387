"""An ``aim`` model for lmms-eval: every lmms-eval task with zero-shot, raw, text-only or fused
demonstrations (docs/lmms-eval.md).

    pip install "aim-icl[lmms-eval]"
    lmms-eval --model aim --model_args backbone=pocket,method=fused,shots=8,select=image \
        --tasks ok_vqa_val2014 --output_path out --log_samples

lmms-eval finds the model through the ``lmms_eval.models`` entry point, which names ``manifest``.
Nothing here imports lmms-eval until lmms-eval asks for the model class, and nothing in the rest of
``aim`` imports this package.
"""


def manifest():
    """The entry point's payload: lmms-eval's ``ModelManifest`` for ``--model aim``."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="aim", simple_class_path="aim.lmms.model.AimModel", aliases=("aim-icl",))
