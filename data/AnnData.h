// In-memory AnnData: the cells x genes count matrix with its obs (cells) and var (genes) tables.
//
// The shapes of what h5ad files hold (notes sec. 7), kept in plain host containers so that readers,
// writers, the simulator and preprocessing share one type without pulling LibTorch into every
// header. Counts are CSR (the layout of every scRNA-seq tool); dense inputs are converted on read.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace latentcell::data {

// Compressed sparse rows: row r holds indices/data[indptr[r] .. indptr[r+1]).
struct CsrMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<int64_t> indptr;   // [rows + 1]
  std::vector<int32_t> indices;  // [nnz] column ids, ascending within a row
  std::vector<float> data;       // [nnz]
  int64_t nnz() const { return static_cast<int64_t>(data.size()); }
};

// One obs/var column. Exactly the vectors of its kind are filled, each with one entry per row.
struct Column {
  enum class Kind { Categorical, String, Float, Int, Bool };
  Kind kind = Kind::Float;
  std::vector<std::string> categories;  // Categorical
  std::vector<int32_t> codes;           // Categorical, -1 = missing
  bool ordered = false;                 // Categorical
  std::vector<std::string> strings;     // String
  std::vector<double> floats;           // Float (NaN = missing)
  std::vector<int64_t> ints;            // Int
  std::vector<uint8_t> bools;           // Bool
  std::vector<uint8_t> missing;         // nullable Int/Bool: 1 = missing; empty when not nullable

  // The value of row i as text (categories resolved, "" for missing), for vocabularies and printing.
  std::string text(int64_t i) const;
  int64_t size() const;
};

struct DataFrame {
  std::string index_name = "_index";
  std::vector<std::string> index;                      // obs_names / var_names
  std::vector<std::pair<std::string, Column>> columns;  // in column order

  const Column* find(const std::string& name) const;
  // The column or an error naming it, the frame (`what`, e.g. "obs") and the columns it does have.
  const Column& at(const std::string& name, const std::string& what) const;
};

// A dense row-major float32 matrix (obsm entries such as embeddings or true effects).
struct DenseMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> values;  // [rows * cols]
};

struct AnnData {
  CsrMatrix X;
  DataFrame obs;
  DataFrame var;
  std::map<std::string, DenseMatrix> obsm;
  std::map<std::string, DenseMatrix> varm;
  std::map<std::string, std::string> uns_strings;  // simple scalar uns entries
  std::map<std::string, double> uns_numbers;
  std::string source;  // the file it was read from ("" when built in memory), for messages

  int64_t n_obs() const { return X.rows; }
  int64_t n_vars() const { return X.cols; }
  // The obs column or an error naming it, the file it came from and the columns there are.
  const Column& obsColumn(const std::string& name) const;
};

// Rows `rows` of a matrix or frame, in that order (repeats allowed): subsets and reorderings of
// cells keep their obs aligned with X.
CsrMatrix takeRows(const CsrMatrix& m, const std::vector<int64_t>& rows);
DataFrame takeRows(const DataFrame& frame, const std::vector<int64_t>& rows);
// Drops the categories no row uses from every categorical column (pandas' remove_unused_categories):
// tools that iterate a column's categories, cell-eval among them, fail on empty groups.
void removeUnusedCategories(DataFrame& frame);

}  // namespace latentcell::data
