# CTest script: install the library into a temporary prefix, then configure, build and run the
# consumer project, which finds it with find_package(pyroscope) — the path a user of an installed
# pyroscope takes. Inputs: PYROSCOPE_BUILD_DIR, CONSUMER_SOURCE_DIR, WORK_DIR, CXX, GENERATOR.
foreach(var PYROSCOPE_BUILD_DIR CONSUMER_SOURCE_DIR WORK_DIR CXX GENERATOR)
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
    message(FATAL_ERROR "consumer test: ${what} failed (${result})")
  endif()
endfunction()

run_step("install" "${CMAKE_COMMAND}" --install "${PYROSCOPE_BUILD_DIR}" --prefix "${prefix}" --component pyroscope)
run_step("configure" "${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE_DIR}" -B "${build}" -G "${GENERATOR}"
         "-DCMAKE_CXX_COMPILER=${CXX}" "-DCMAKE_PREFIX_PATH=${prefix}" -DCMAKE_BUILD_TYPE=Release)
run_step("build" "${CMAKE_COMMAND}" --build "${build}")
run_step("run" "${build}/consumer" "${CONSUMER_SOURCE_DIR}/../../examples/data/rideshare.folded" "${WORK_DIR}/consumer.pyro")
