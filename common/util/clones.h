/* FEDC_CLONES marks a hot loop to be compiled for AVX-512, AVX2 and the
 * baseline instruction set, the dynamic loader picking one for the CPU at
 * startup (GCC's and Clang's target_clones, through an ifunc). Results do
 * not depend on the clone: the project builds as ISO C, which keeps the
 * compiler from fusing multiplies and adds, and a loop's summation order
 * is the one its source spells out. Empty where the attribute is missing. */
#ifndef FEDC_UTIL_CLONES_H
#define FEDC_UTIL_CLONES_H

#if defined(__x86_64__) && defined(__has_attribute) && !defined(__clang__)
#if __has_attribute(target_clones)
#define FEDC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif

#ifndef FEDC_CLONES
#define FEDC_CLONES
#endif

#endif
