// Opens the instruction-set region of a kernel source. Each file listed in BIREF_KERNEL_SOURCES
// (CMakeLists.txt) is compiled once per level, with BIREF_ISA naming it (generic, avx2,
// avx512), gemm_bf16.cpp once at avx512_bf16; their functions live in namespace
// biref::cpu::BIREF_ISA, and kernel_table.cpp collects them for the run-time choice
// (dispatch.cpp).
//
// Include this after every other header, and isa_end.h at the end of the file. Only the code
// between the two gets the level's instructions: the standard library's and biref's inline
// functions are defined above it, at the baseline, so the copy the linker keeps of any of them
// runs on every CPU (compiling whole files with -mavx512f would break that). The baseline
// inline functions are still inlined into the kernels and vectorised at their level.
// tests/check_isa_symbols.sh checks the built binaries for wide instructions outside these
// regions. That holds for GCC (the default build). clang's `#pragma clang attribute` also gives
// the level to standard-library templates first instantiated inside the region, so a clang
// build (the fuzzers) may keep such a copy: run it on the CPU it was built for.
#if !defined(BIREF_ISA)
#error "a kernel source is compiled per instruction set, with BIREF_ISA defined (CMakeLists.txt)"
#endif

#if defined(__clang__)
#if defined(BIREF_ISA_AVX512_BF16)
#pragma clang attribute push(                                                                            \
    __attribute__((target(                                                                               \
        "avx512bf16,avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt"))), \
    apply_to = function)
#elif defined(BIREF_ISA_AVX512)
#pragma clang attribute push(                                                                 \
    __attribute__((target(                                                                    \
        "avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt"))), \
    apply_to = function)
#elif defined(BIREF_ISA_AVX2)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt"))), \
                             apply_to = function)
#else
#pragma clang attribute push(__attribute__((target("sse2"))), apply_to = function)
#endif
#else
#pragma GCC push_options
#if defined(BIREF_ISA_AVX512_BF16)
#pragma GCC target( \
    "avx512bf16,avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,prefer-vector-width=512")
#elif defined(BIREF_ISA_AVX512)
#pragma GCC target( \
    "avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,prefer-vector-width=512")
#elif defined(BIREF_ISA_AVX2)
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#endif
#endif
