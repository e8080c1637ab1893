# Third-party libraries, all from Debian packages (.ci/setup installs them).
find_package(Threads REQUIRED)

find_path(ZSTD_INCLUDE_DIR zstd.h REQUIRED)
find_library(ZSTD_LIBRARY zstd REQUIRED)
add_library(woq::zstd INTERFACE IMPORTED)
target_include_directories(woq::zstd INTERFACE ${ZSTD_INCLUDE_DIR})
target_link_libraries(woq::zstd INTERFACE ${ZSTD_LIBRARY})

find_path(XXHASH_INCLUDE_DIR xxhash.h REQUIRED)
find_library(XXHASH_LIBRARY xxhash REQUIRED)
add_library(woq::xxhash INTERFACE IMPORTED)
target_include_directories(woq::xxhash INTERFACE ${XXHASH_INCLUDE_DIR})
target_link_libraries(woq::xxhash INTERFACE ${XXHASH_LIBRARY})

find_package(nlohmann_json 3 REQUIRED)  # header-only: parses safetensors headers and checkpoint configs
if(WOQ_BUILD_CLI)
  find_package(CLI11 REQUIRED)
endif()
if(WOQ_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
