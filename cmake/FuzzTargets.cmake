# The extra sources a fuzz target compiles besides the library: targets over sandbox code build
# the (libmicrohttpd-free) sandbox files they exercise. Used by the corpus replayers
# (tests/CMakeLists.txt) and by the libFuzzer build (tests/fuzz/CMakeLists.txt).
function(fhirsync_fuzz_extra_sources name out_var)
  set(sb ${PROJECT_SOURCE_DIR}/src/sandbox)
  if(name STREQUAL "fuzz_sandbox_request")
    set(${out_var} ${sb}/parse.c ${sb}/query.c ${sb}/scope.c PARENT_SCOPE)
  elseif(name STREQUAL "fuzz_sandbox_assertion")
    set(${out_var} ${sb}/assertion.c PARENT_SCOPE)
  else()
    set(${out_var} "" PARENT_SCOPE)
  endif()
endfunction()
