"""bench/gpu_profile.py sorts CUDA kernels into kinds by their names (matmul, attention, loss, ...): the
names of kernels seen on real GPUs, checked without one."""

from __future__ import annotations

import sys

import pytest

from tests.helpers import REPO


@pytest.mark.parametrize("name,expected", [
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4, false, false, "
     "cutlass::bfloat16_t> >(Flash_fwd_params)", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x128_4x1x1_kernel0_0", "attention"),
    ("fmha_cutlassB_bf16_aligned_64x64_k128_sm80", "attention"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_kernel__5x_cublas",
     "matmul"),
    ("nvjet_hsh_128x256_64x4_1x2_h_bz_coopA_NTN", "matmul"),
    ("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_64x3_tn", "matmul"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "TensorListMetadata<4>, at::native::(anonymous namespace)::FusedAdamMathFunctor<float, 4> >", "optimizer"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, "
     "at::native::(anonymous namespace)::LogSoftMaxForwardEpilogue>(float*, float const*, int)", "loss"),
    ("void at::native::(anonymous namespace)::nll_loss_forward_reduce_cuda_kernel_2d<float, float, long>", "loss"),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0", "compiled"),
    ("triton_red_fused__log_softmax_nll_loss_forward_3", "loss"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16> >", "element-wise"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)>",
     "copy"),
    ("Memcpy DtoD (Device -> Device)", "copy"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, float> > >",
     "reduction"),
    ("void at::native::(anonymous namespace)::embedding_backward_feature_kernel<c10::BFloat16, float, long>",
     "other"),
])
def test_gpu_profile_puts_each_kernel_in_its_kind(name, expected):
    sys.path.insert(0, str(REPO / "bench"))
    from gpu_profile import kind

    assert kind(name) == expected
