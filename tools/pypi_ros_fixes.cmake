# Fixes for building interfaces against the ROS 2 PyPI wheels in .venv (tools/build_msgs.sh passes
# this file as CMAKE_PROJECT_INCLUDE; a normal colcon build with a ROS distro does not use it).
#
# 1. The wheels were built in a manylinux container and their exported
#    <pkg>::<pkg>__rosidl_generator_py targets hard-code that container's include dirs, e.g.
#      /opt/python/cp311-cp311/include/python3.11
#      /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
#    CMake refuses imported targets with non-existent include dirs. Missing Python / NumPy include
#    dirs are replaced with the ones of the interpreter we build for (Python3_EXECUTABLE).
# 2. .venv lives inside the source tree, so the NumPy include dir that rosidl_generator_py puts
#    into the PUBLIC include dirs of our exported ${PROJECT_NAME}__rosidl_generator_py target is
#    "prefixed in the source directory", which install(EXPORT) rejects. Such dirs are wrapped in
#    $<BUILD_INTERFACE:...> (they are only needed to compile the extension itself).
#
# Both run deferred, at the end of the top-level CMakeLists.txt, when all targets exist.

function(_xnet_pypi_ros_fixes)
  if(NOT Python3_INCLUDE_DIRS OR NOT Python3_NumPy_INCLUDE_DIRS)
    find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)
  endif()

  get_directory_property(_imported DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  set(_fixed 0)
  foreach(_tgt IN LISTS _imported)
    get_target_property(_type ${_tgt} TYPE)
    get_target_property(_dirs ${_tgt} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_new "")
    set(_changed FALSE)
    foreach(_d IN LISTS _dirs)
      if(_d MATCHES "^\\$<" OR EXISTS "${_d}")
        list(APPEND _new "${_d}")
      elseif(_d MATCHES "/numpy/(_core/|core/)?include/?$")
        list(APPEND _new ${Python3_NumPy_INCLUDE_DIRS})
        set(_changed TRUE)
      elseif(_d MATCHES "/include/python3\\.[0-9]+t?/?$")
        list(APPEND _new ${Python3_INCLUDE_DIRS})
        set(_changed TRUE)
      else()
        list(APPEND _new "${_d}")  # unknown: leave it, CMake will report it
      endif()
    endforeach()
    if(_changed)
      list(REMOVE_DUPLICATES _new)
      set_target_properties(${_tgt} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new}")
      math(EXPR _fixed "${_fixed} + 1")
    endif()
  endforeach()
  message(STATUS "xnet_ros: fixed Python/NumPy include dirs of ${_fixed} imported targets")

  # our own exported targets: keep in-source (.venv) include dirs out of the install export
  get_directory_property(_own DIRECTORY "${CMAKE_SOURCE_DIR}" BUILDSYSTEM_TARGETS)
  foreach(_tgt IN LISTS _own)
    get_target_property(_type ${_tgt} TYPE)
    if(_type STREQUAL "UTILITY")
      continue()
    endif()
    get_target_property(_dirs ${_tgt} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_new "")
    set(_changed FALSE)
    foreach(_d IN LISTS _dirs)
      cmake_path(IS_PREFIX CMAKE_SOURCE_DIR "${_d}" NORMALIZE _in_source)
      if(NOT _d MATCHES "^\\$<" AND _in_source)
        list(APPEND _new "$<BUILD_INTERFACE:${_d}>")
        set(_changed TRUE)
      else()
        list(APPEND _new "${_d}")
      endif()
    endforeach()
    if(_changed)
      set_target_properties(${_tgt} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new}")
    endif()
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _xnet_pypi_ros_fixes)
