# CTest script: builds and runs the consumer project against pyroscope the way a user would.
#   MODE=find_package      install the library into a temporary prefix, then find_package(pyroscope)
#   MODE=add_subdirectory  add_subdirectory() of the repository
# Inputs: MODE, PYROSCOPE_BUILD_DIR, REPOSITORY_DIR, WORK_DIR, CXX, GENERATOR.
foreach(var MODE PYROSCOPE_BUILD_DIR REPOSITORY_DIR WORK_DIR CXX GENERATOR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: -D${var}=... is required")
  endif()
endforeach()

set(prefix "${WORK_DIR}/prefix")
set(build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${prefix}" "${build}")

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "consumer test (${MODE}): ${what} failed (${result})")
  endif()
endfunction()

if(MODE STREQUAL "find_package")
  run_step("install" "${CMAKE_COMMAND}" --install "${PYROSCOPE_BUILD_DIR}" --prefix "${prefix}" --component pyroscope)
  set(how "-DCMAKE_PREFIX_PATH=${prefix}")
elseif(MODE STREQUAL "add_subdirectory")
  set(how "-DPYROSCOPE_SOURCE_DIR=${REPOSITORY_DIR}")
else()
  message(FATAL_ERROR "run.cmake: MODE must be find_package or add_subdirectory")
endif()
run_step("configure" "${CMAKE_COMMAND}" -S "${REPOSITORY_DIR}/tests/consumer" -B "${build}" -G "${GENERATOR}"
         "-DCMAKE_CXX_COMPILER=${CXX}" "${how}" -DCMAKE_BUILD_TYPE=Release)
run_step("build" "${CMAKE_COMMAND}" --build "${build}")
run_step("run" "${build}/consumer" "${REPOSITORY_DIR}/examples/data/rideshare.folded" "${WORK_DIR}/consumer.pyro")
