// `biref segment`'s files: the inputs named on the command line (files, folders, globs) expanded
// to a list of images, and where each one's outputs go.
#pragma once
#include <string>
#include <vector>

namespace biref::cli {

struct InputImage {
  std::string path;  // as found (the argument, or joined to its folder)
  // The output name's base: the file name without its extension, or for a file found in a
  // folder argument its path below that folder without the extension ("shoes/red-01").
  std::string stem;
};

// Each argument is an image file, a folder (its image files by extension, in name order;
// with `recursive` its subfolders too) or a glob pattern ('*', '?', '[...]', quoted so the
// shell leaves it) matching files. The same file reached twice is listed once. Throws
// biref::Error naming the argument when it does not exist, matches nothing, or is a folder
// without images; `skipped_folders` counts the subfolders left out without `recursive`.
std::vector<InputImage> expand_inputs(const std::vector<std::string>& args, bool recursive,
                                      size_t& skipped_folders);

// The extensions a folder is searched for (lower case, with the dot).
const std::vector<std::string>& input_extensions();

struct OutputPlan {
  bool folder = false;  // outputs go to OUT/<stem>.<kind>.png; else -o is the one output file
  // paths[i][k]: image i's output of kind k.
  std::vector<std::vector<std::string>> paths;
};

// Where the outputs go. -o names the output file when there is one input file and one kind,
// and -o is not an existing folder and does not end in '/'; otherwise -o is a folder (made when
// missing, inside a folder that exists) and image i's output of kind k is
// OUT/<stem>.<kind>.png, its subfolders mirroring the input folders. Throws biref::Error before
// anything is written when two images map to the same output (naming both), when an output is
// one of the inputs, or -o cannot be the folder it must be.
OutputPlan plan_outputs(const std::vector<InputImage>& inputs, bool single_file_input,
                        const std::string& out, const std::vector<std::string>& kinds);

}  // namespace biref::cli
