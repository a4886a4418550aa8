/* A small MPI program: the ranks integrate 4 / (1 + x^2) over [0, 1] (which is pi) together.
 *
 *   integrate INTERVALS [FAILING_RANK]
 *
 * Each rank sums every size-th interval; MPI_Allreduce gives every rank the total, and each
 * rank prints what it sees. With FAILING_RANK, that rank reports an error on stderr and exits
 * with status 3 after the reduction (the tests use it).
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int rank, size;
    long intervals, i;
    double width, mine = 0.0, total = 0.0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    intervals = argc > 1 ? atol(argv[1]) : 1000;
    width = 1.0 / (double)intervals;
    for (i = rank; i < intervals; i += size) {
        double x = ((double)i + 0.5) * width;
        mine += 4.0 / (1.0 + x * x);
    }
    mine *= width;
    MPI_Allreduce(&mine, &total, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    MPI_Finalize();
    if (argc > 2 && rank == atoi(argv[2])) {
        fprintf(stderr, "rank %d of %d gives up\n", rank, size);
        return 3;
    }
    printf("rank %d of %d: %.12f\n", rank, size, total);
    return 0;
}
