/* true: exits 0 at once. Built -static as the child of execloop (figure 6): a static program,
 * which `preload run` traces with ptrace instead of hooking. */
int main(void)
{
    return 0;
}
