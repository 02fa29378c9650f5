// sim_ubsan.cpp: the handlers of UBSan's checks for the kernels compiled for fastres's sim.
//
// fastres/kernels/sim.py compiles the kernels with -fsanitize=undefined, the compiler's
// UndefinedBehaviorSanitizer instrumentation, and links them with these handlers instead of the
// libubsan runtime: a check that fails aborts the launch at once with UBSan's message, raised in
// Python as SimError. libubsan would print to stderr, report each source location once per
// process, and take no new report path after its first report (GCC 12): a test could not read
// its reports. Every handler's data starts with the source location (compiler-rt's
// ubsan_handlers.h, GCC's sanitizer.def: the same interface); the messages follow libubsan's.
#include <cstdint>
#include <cstdio>
#include <string>

// sim_runtime.cpp: ends the running launch with the message `what`
extern "C" [[noreturn]] void fastres_sim_abort_launch(const char* what);

namespace {

struct SourceLocation {
  const char* file;
  uint32_t line;
  uint32_t column;
};

struct TypeDescriptor {
  uint16_t kind;  // 0 integer, 1 float, 0xffff unknown
  uint16_t info;  // integer: log2(bit width) << 1 | signed
  char name[1];   // quoted: "'unsigned int'"
};

std::string at(const SourceLocation& loc) {
  return std::string(loc.file ? loc.file : "<unknown>") + ":" + std::to_string(loc.line) + ":" +
         std::to_string(loc.column);
}

// An integer operand as libubsan prints it (values of at most 64 bits are passed inline).
std::string value(const TypeDescriptor* t, uintptr_t v) {
  if (t == nullptr || t->kind != 0 || (t->info >> 1) > 6) return "?";
  const unsigned bits = 1u << (t->info >> 1);
  if (t->info & 1) {
    const int64_t s = bits == 64 ? static_cast<int64_t>(v) : static_cast<int64_t>(v << (64 - bits)) >> (64 - bits);
    return std::to_string(s);
  }
  return std::to_string(bits == 64 ? static_cast<uint64_t>(v) : v & ((uint64_t{1} << bits) - 1));
}

[[noreturn]] void report(const SourceLocation& loc, const std::string& what) {
  fastres_sim_abort_launch(("UBSan: " + at(loc) + ": runtime error: " + what).c_str());
}

const char* const kTypeCheckKinds[] = {
    "load of",  "store to",    "reference binding to", "member access within", "member call on",
    "constructor call on", "downcast of", "downcast of", "upcast of", "cast to virtual base of",
    "_Nonnull binding to", "dynamic operation on"};

struct TypeMismatchData {
  SourceLocation loc;
  const TypeDescriptor* type;
  unsigned char log_alignment;
  unsigned char type_check_kind;
};

struct ShiftData {
  SourceLocation loc;
  const TypeDescriptor* lhs_type;
  const TypeDescriptor* rhs_type;
};

struct OverflowData {
  SourceLocation loc;
  const TypeDescriptor* type;
};

struct OutOfBoundsData {
  SourceLocation loc;
  const TypeDescriptor* array_type;
  const TypeDescriptor* index_type;
};

void type_mismatch(TypeMismatchData* d, uintptr_t p) {
  const char* kind = d->type_check_kind < 12 ? kTypeCheckKinds[d->type_check_kind] : "access to";
  const uintptr_t alignment = uintptr_t{1} << d->log_alignment;
  char address[32];
  snprintf(address, sizeof address, "%p", reinterpret_cast<void*>(p));
  if (p == 0) report(d->loc, std::string(kind) + " null pointer of type " + d->type->name);
  if (p & (alignment - 1)) {
    report(d->loc, std::string(kind) + " misaligned address " + address + " for type " + d->type->name +
                       ", which requires " + std::to_string(alignment) + " byte alignment");
  }
  report(d->loc, std::string(kind) + " address " + address + " with insufficient space for an object of type " +
                     d->type->name);
}

void shift(ShiftData* d, uintptr_t lhs, uintptr_t rhs) {
  report(d->loc, "shift exponent " + value(d->rhs_type, rhs) + " is out of range for type " + d->lhs_type->name +
                     " (or the shifted value " + value(d->lhs_type, lhs) + " overflows)");
}

void overflow(OverflowData* d, const char* op, uintptr_t lhs, uintptr_t rhs) {
  report(d->loc, std::string("signed integer overflow: ") + value(d->type, lhs) + " " + op + " " +
                     value(d->type, rhs) + " cannot be represented in type " + d->type->name);
}

}  // namespace

#define FASTRES_UBSAN_HANDLER(name, params, body)                                           \
  extern "C" __attribute__((visibility("hidden"))) void __ubsan_handle_##name params body \
  extern "C" __attribute__((visibility("hidden"))) void __ubsan_handle_##name##_abort params body

FASTRES_UBSAN_HANDLER(type_mismatch_v1, (TypeMismatchData* d, uintptr_t p), { type_mismatch(d, p); })
FASTRES_UBSAN_HANDLER(shift_out_of_bounds, (ShiftData* d, uintptr_t lhs, uintptr_t rhs), { shift(d, lhs, rhs); })
FASTRES_UBSAN_HANDLER(add_overflow, (OverflowData* d, uintptr_t a, uintptr_t b), { overflow(d, "+", a, b); })
FASTRES_UBSAN_HANDLER(sub_overflow, (OverflowData* d, uintptr_t a, uintptr_t b), { overflow(d, "-", a, b); })
FASTRES_UBSAN_HANDLER(mul_overflow, (OverflowData* d, uintptr_t a, uintptr_t b), { overflow(d, "*", a, b); })
FASTRES_UBSAN_HANDLER(negate_overflow, (OverflowData* d, uintptr_t v), {
  report(d->loc, "negation of " + value(d->type, v) + " cannot be represented in type " + d->type->name);
})
FASTRES_UBSAN_HANDLER(divrem_overflow, (OverflowData* d, uintptr_t, uintptr_t), {
  report(d->loc, std::string("division by zero or overflow in type ") + d->type->name);
})
FASTRES_UBSAN_HANDLER(out_of_bounds, (OutOfBoundsData* d, uintptr_t i), {
  report(d->loc, "index " + value(d->index_type, i) + " out of bounds for type " + d->array_type->name);
})
FASTRES_UBSAN_HANDLER(pointer_overflow, (SourceLocation* loc, uintptr_t base, uintptr_t result), {
  char buf[96];
  snprintf(buf, sizeof buf, "pointer arithmetic on %p overflowed to %p", reinterpret_cast<void*>(base),
           reinterpret_cast<void*>(result));
  report(*loc, buf);
})
FASTRES_UBSAN_HANDLER(load_invalid_value, (OverflowData* d, uintptr_t v), {
  report(d->loc, "load of value " + value(d->type, v) + ", which is not a valid value for type " + d->type->name);
})
FASTRES_UBSAN_HANDLER(vla_bound_not_positive, (OverflowData* d, uintptr_t v), {
  report(d->loc, "variable length array bound evaluates to non-positive value " + value(d->type, v));
})
FASTRES_UBSAN_HANDLER(float_cast_overflow, (SourceLocation* loc, uintptr_t), {
  report(*loc, "a float converted to an integer type it does not fit");
})
FASTRES_UBSAN_HANDLER(nonnull_arg, (SourceLocation* loc), { report(*loc, "null pointer passed as an argument declared never null"); })
FASTRES_UBSAN_HANDLER(nonnull_return_v1, (SourceLocation* loc, SourceLocation*), {
  report(*loc, "null pointer returned from a function declared never to return null");
})
FASTRES_UBSAN_HANDLER(invalid_builtin, (SourceLocation* loc), { report(*loc, "passing zero to ctz() or clz()"); })

extern "C" __attribute__((visibility("hidden"))) void __ubsan_handle_builtin_unreachable(SourceLocation* loc) {
  report(*loc, "execution reached an unreachable program point");
}
extern "C" __attribute__((visibility("hidden"))) void __ubsan_handle_missing_return(SourceLocation* loc) {
  report(*loc, "execution reached the end of a value-returning function without returning a value");
}
